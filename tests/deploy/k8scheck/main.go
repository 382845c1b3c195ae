// k8scheck validates rendered Kubernetes manifests for the sealvol chart.
//
//	k8scheck decode FILE...
//	    strictly decode every document into its Kubernetes API type; prints
//	    one line per object, exits 1 on the first invalid file set.
//	k8scheck contract --controller-help F --node-help F [--kubelet-dir D]
//	                  [--min-replicas N] [--token-in-secrets=false] FILE...
//	    decode, then check the driver's contract (see contract.go).
//	k8scheck psa FILE...
//	    decode, then check that every workload in a namespace (defined in
//	    FILE...) that enforces Pod Security "restricted" satisfies it.
//	k8scheck helpflags F
//	    print the long flags a CLI11 --help text lists (for debugging).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck decode|contract|helpflags ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "decode":
		objs, err := DecodeFiles(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck:", err)
			os.Exit(1)
		}
		for _, o := range objs {
			fmt.Println(o.GVK.GroupVersion().String(), o.GVK.Kind, o.Meta.Namespace, o.Meta.Name)
		}
		fmt.Printf("k8scheck: %d objects decoded strictly\n", len(objs))
	case "contract":
		fs := flag.NewFlagSet("contract", flag.ExitOnError)
		ctlHelp := fs.String("controller-help", "", "file with `sealvol controller --help` output")
		nodeHelp := fs.String("node-help", "", "file with `sealvol node --help` output")
		kubeletDir := fs.String("kubelet-dir", "/var/lib/kubelet", "kubelet root directory")
		minReplicas := fs.Int("min-replicas", 2, "minimum controller replicas")
		inSecrets := fs.Bool("token-in-secrets", true, "expect CSIDriver serviceAccountTokenInSecrets: true (false: absent)")
		_ = fs.Parse(os.Args[2:])
		opt := ContractOptions{KubeletDir: *kubeletDir, MinReplicas: int32(*minReplicas), TokenInSecrets: *inSecrets}
		var err error
		if opt.ControllerFlags, err = helpFlags(*ctlHelp); err != nil {
			fail(err)
		}
		if opt.NodeFlags, err = helpFlags(*nodeHelp); err != nil {
			fail(err)
		}
		objs, err := DecodeFiles(fs.Args())
		if err != nil {
			fail(err)
		}
		if failures := CheckContract(objs, opt); len(failures) > 0 {
			fail(fmt.Errorf("%d contract failure(s):\n  %s", len(failures), strings.Join(failures, "\n  ")))
		}
		fmt.Printf("k8scheck: contract holds for %d objects\n", len(objs))
	case "psa":
		objs, err := DecodeFiles(os.Args[2:])
		if err != nil {
			fail(err)
		}
		n, failures := CheckPodSecurity(objs)
		if len(failures) > 0 {
			fail(fmt.Errorf("%d Pod Security violation(s):\n  %s", len(failures), strings.Join(failures, "\n  ")))
		}
		fmt.Printf("k8scheck: %d workload(s) satisfy Pod Security restricted\n", n)
	case "helpflags":
		flags, err := helpFlags(os.Args[2])
		if err != nil {
			fail(err)
		}
		fmt.Println(strings.Join(sortedKeys(flags), "\n"))
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func helpFlags(file string) (map[string]bool, error) {
	if file == "" {
		return nil, fmt.Errorf("a --help output file is required")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	flags := ParseHelpFlags(string(data))
	if len(flags) < 3 {
		return nil, fmt.Errorf("%s lists only %d flags: not a --help output", file, len(flags))
	}
	return flags, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "k8scheck:", err)
	os.Exit(1)
}
