// sealvol-test-sidecar stands in, in the one-node test cluster only, for the
// two upstream node sidecars that cannot be built here: node-driver-registrar
// and livenessprobe. It takes the upstream flags the chart passes, so the
// test install swaps only the image.
//
//	sealvol-test-sidecar registrar --csi-address=P --kubelet-registration-path=P [--http-endpoint=:N]
//	sealvol-test-sidecar livenessprobe --csi-address=P [--http-endpoint=:N] [--probe-timeout=D]
//
// registrar asks the driver its name (CSI GetPluginInfo), serves the kubelet
// plugin-registration API (GetInfo, NotifyRegistrationStatus) on
// /registration/<name>-reg.sock and answers /healthz while the kubelet has
// accepted the plugin. livenessprobe answers /healthz with the driver's CSI
// Probe.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func dialDriver(address string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// driverName asks the driver for its name, retrying until the socket answers.
func driverName(conn *grpc.ClientConn) string {
	ids := csi.NewIdentityClient(conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := ids.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil && info.GetName() != "" {
			return info.GetName()
		}
		log.Printf("waiting for the driver: GetPluginInfo: %v", err)
		time.Sleep(time.Second)
	}
}

type registrationServer struct {
	registration.UnimplementedRegistrationServer
	name, endpoint string
	registered     *atomic.Bool
}

func (s *registrationServer) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              s.name,
		Endpoint:          s.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (s *registrationServer) NotifyRegistrationStatus(_ context.Context, status *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if !status.PluginRegistered {
		// As upstream: exit, so the container restarts and registers again.
		log.Fatalf("kubelet refused the plugin: %s", status.Error)
	}
	log.Printf("kubelet registered %s at %s", s.name, s.endpoint)
	s.registered.Store(true)
	return &registration.RegistrationStatusResponse{}, nil
}

func serveHealth(endpoint string, healthy func(context.Context) error) {
	if endpoint == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	go func() { log.Fatal(http.ListenAndServe(endpoint, mux)) }()
}

func runRegistrar(args []string) {
	fs := flag.NewFlagSet("registrar", flag.ExitOnError)
	csiAddress := fs.String("csi-address", "", "the driver's CSI socket inside this container")
	kubeletPath := fs.String("kubelet-registration-path", "", "the driver's CSI socket as the kubelet sees it")
	registrationDir := fs.String("plugin-registration-path", "/registration", "the kubelet's plugins_registry, mounted")
	httpEndpoint := fs.String("http-endpoint", "", "address of /healthz (empty: none)")
	fs.Int("v", 0, "ignored (upstream verbosity flag)")
	_ = fs.Parse(args)
	if *csiAddress == "" || *kubeletPath == "" {
		log.Fatal("registrar: --csi-address and --kubelet-registration-path are required")
	}
	conn, err := dialDriver(*csiAddress)
	if err != nil {
		log.Fatalf("registrar: --csi-address %s: %v", *csiAddress, err)
	}
	name := driverName(conn)
	conn.Close()

	socket := filepath.Join(*registrationDir, name+"-reg.sock")
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("registrar: remove stale %s: %v", socket, err)
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("registrar: listen %s: %v", socket, err)
	}
	registered := &atomic.Bool{}
	server := grpc.NewServer()
	registration.RegisterRegistrationServer(server, &registrationServer{name: name, endpoint: *kubeletPath, registered: registered})
	serveHealth(*httpEndpoint, func(context.Context) error {
		if _, err := os.Stat(socket); err != nil {
			return fmt.Errorf("registration socket: %v", err)
		}
		if !registered.Load() {
			return errors.New("not registered with the kubelet yet")
		}
		return nil
	})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		server.Stop()
		os.Remove(socket)
		os.Exit(0)
	}()
	log.Printf("registrar: serving %s for driver %s", socket, name)
	log.Fatal(server.Serve(listener))
}

func runLivenessProbe(args []string) {
	fs := flag.NewFlagSet("livenessprobe", flag.ExitOnError)
	csiAddress := fs.String("csi-address", "", "the driver's CSI socket")
	httpEndpoint := fs.String("http-endpoint", ":9808", "address of /healthz")
	timeout := fs.Duration("probe-timeout", time.Second, "timeout of one CSI Probe")
	fs.Int("v", 0, "ignored (upstream verbosity flag)")
	_ = fs.Parse(args)
	if *csiAddress == "" {
		log.Fatal("livenessprobe: --csi-address is required")
	}
	conn, err := dialDriver(*csiAddress)
	if err != nil {
		log.Fatalf("livenessprobe: --csi-address %s: %v", *csiAddress, err)
	}
	ids := csi.NewIdentityClient(conn)
	serveHealth(*httpEndpoint, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		r, err := ids.Probe(ctx, &csi.ProbeRequest{})
		if err != nil {
			return fmt.Errorf("CSI Probe: %v", err)
		}
		if r.GetReady() != nil && !r.GetReady().GetValue() {
			return errors.New("CSI Probe: driver not ready")
		}
		return nil
	})
	log.Printf("livenessprobe: /healthz on %s probes %s", *httpEndpoint, *csiAddress)
	select {}
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if len(os.Args) < 2 {
		log.Fatal("usage: sealvol-test-sidecar registrar|livenessprobe [flags]")
	}
	switch os.Args[1] {
	case "registrar":
		runRegistrar(os.Args[2:])
	case "livenessprobe":
		runLivenessProbe(os.Args[2:])
	default:
		log.Fatalf("sealvol-test-sidecar: unknown mode %q (registrar, livenessprobe)", os.Args[1])
	}
}
