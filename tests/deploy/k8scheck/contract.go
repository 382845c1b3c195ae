package main

// Contract checks: the rendered objects carry what the driver relies on, and
// the flags the chart passes exist in the real binary.

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const driverName = "sealvol.csi.dev"

// ContractOptions are what the caller knows from outside the manifests.
type ContractOptions struct {
	ControllerFlags map[string]bool // long flags of `sealvol controller --help`
	NodeFlags       map[string]bool // long flags of `sealvol node --help`
	KubeletDir      string          // expected kubelet root, /var/lib/kubelet
	MinReplicas     int32
	// TokenInSecrets: the chart's value; off means the field is left out
	// for API servers that predate it.
	TokenInSecrets bool
}

var helpFlag = regexp.MustCompile(`(?:^|[\s,])(--[a-z0-9][a-z0-9-]*)`)

// ParseHelpFlags returns the long option names a CLI11 --help text lists.
// It reads only the option column (lines that start with whitespace then a
// dash), so flag names mentioned inside descriptions are not counted.
func ParseHelpFlags(help string) map[string]bool {
	flags := map[string]bool{}
	for _, line := range strings.Split(help, "\n") {
		t := strings.TrimLeft(line, " \t")
		if !strings.HasPrefix(t, "-") || len(t) == len(line) {
			continue
		}
		// The option column ends at the first run of two spaces.
		col := t
		if i := strings.Index(t, "  "); i >= 0 {
			col = t[:i]
		}
		for _, m := range helpFlag.FindAllStringSubmatch(col, -1) {
			flags[strings.TrimPrefix(m[1], "--")] = true
		}
	}
	return flags
}

type checker struct{ failures []string }

func (c *checker) failf(format string, args ...interface{}) {
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

// parseArgs turns ["controller", "--a=b", "--c"] into the subcommand and a
// flag map; it rejects the "--flag value" form so values cannot be misread.
func parseArgs(c *checker, who string, args []string) (string, map[string]string) {
	flags := map[string]string{}
	sub := ""
	for i, a := range args {
		if !strings.HasPrefix(a, "--") {
			if i == 0 {
				sub = a
				continue
			}
			c.failf("%s: argument %q is not --flag=value", who, a)
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if _, dup := flags[name]; dup {
			c.failf("%s: flag --%s given twice", who, name)
		}
		flags[name] = value
	}
	return sub, flags
}

func findContainer(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

// containerByImage finds a sidecar by its image's last path element.
func containerByImage(spec *corev1.PodSpec, image string) *corev1.Container {
	for i := range spec.Containers {
		ref := spec.Containers[i].Image
		base := path.Base(strings.SplitN(ref, "@", 2)[0])
		base = strings.SplitN(base, ":", 2)[0]
		if base == image {
			return &spec.Containers[i]
		}
	}
	return nil
}

func mountFor(ctr *corev1.Container, mountPath string) *corev1.VolumeMount {
	for i := range ctr.VolumeMounts {
		if path.Clean(ctr.VolumeMounts[i].MountPath) == path.Clean(mountPath) {
			return &ctr.VolumeMounts[i]
		}
	}
	return nil
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func checkFlagsExist(c *checker, who string, flags map[string]string, known map[string]bool) {
	names := make([]string, 0, len(flags))
	for n := range flags {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !known[n] {
			c.failf("%s: flag --%s is not a flag of the binary (its --help lists: %s)", who, n, strings.Join(sortedKeys(known), " "))
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func requireFlags(c *checker, who string, flags map[string]string, names ...string) {
	for _, n := range names {
		if v, ok := flags[n]; !ok || v == "" {
			c.failf("%s: required flag --%s missing or empty", who, n)
		}
	}
}

// sidecarSocketCheck: the sidecar's --csi-address is the driver's socket and
// both containers mount the socket's directory from the same volume.
func sidecarSocketCheck(c *checker, who string, spec *corev1.PodSpec, driver, sidecar *corev1.Container, socket string) {
	_, sf := parseArgs(c, who+"/"+sidecar.Name, sidecar.Args)
	if sf["csi-address"] != socket {
		c.failf("%s/%s: --csi-address=%q, driver socket is %q", who, sidecar.Name, sf["csi-address"], socket)
		return
	}
	dm, sm := mountFor(driver, path.Dir(socket)), mountFor(sidecar, path.Dir(socket))
	if dm == nil || sm == nil || dm.Name != sm.Name {
		c.failf("%s/%s: socket directory %s is not mounted from one shared volume", who, sidecar.Name, path.Dir(socket))
	}
}

func endpointSocket(c *checker, who, endpoint string) string {
	if !strings.HasPrefix(endpoint, "unix:///") {
		c.failf("%s: --endpoint=%q is not unix:///PATH", who, endpoint)
		return ""
	}
	return strings.TrimPrefix(endpoint, "unix://")
}

func hostPathOf(spec *corev1.PodSpec, mount *corev1.VolumeMount) string {
	if mount == nil {
		return ""
	}
	v := volume(spec, mount.Name)
	if v == nil || v.HostPath == nil {
		return ""
	}
	return path.Clean(v.HostPath.Path)
}

// CheckContract runs every contract check and returns the failures.
func CheckContract(objs []*Object, opt ContractOptions) []string {
	c := &checker{}
	var (
		drivers      []*storagev1.CSIDriver
		controllers  []*appsv1.Deployment
		nodes        []*appsv1.DaemonSet
		services     []*corev1.Service
		serviceAccts = map[string]bool{}
		priorities   = map[string]bool{}
		pdbs         []*policyv1.PodDisruptionBudget
		classes      []*storagev1.StorageClass
	)
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *storagev1.CSIDriver:
			drivers = append(drivers, t)
		case *appsv1.Deployment:
			if t.Spec.Template.Labels["app.kubernetes.io/component"] == "controller" {
				controllers = append(controllers, t)
			}
		case *appsv1.DaemonSet:
			if t.Spec.Template.Labels["app.kubernetes.io/component"] == "node" {
				nodes = append(nodes, t)
			}
		case *corev1.Service:
			services = append(services, t)
		case *corev1.ServiceAccount:
			serviceAccts[t.Namespace+":"+t.Name] = true
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, t)
		case *storagev1.StorageClass:
			classes = append(classes, t)
		case interface{ GetName() string }:
			if o.GVK.Kind == "PriorityClass" {
				priorities[t.GetName()] = true
			}
		}
	}
	if len(drivers) != 1 || len(controllers) != 1 || len(nodes) != 1 {
		c.failf("want exactly one CSIDriver, controller Deployment and node DaemonSet; got %d, %d, %d",
			len(drivers), len(controllers), len(nodes))
		return c.failures
	}

	// CSIDriver.
	d := drivers[0]
	audience := ""
	if d.Name != driverName {
		c.failf("CSIDriver name %q, want %q", d.Name, driverName)
	}
	if d.Spec.AttachRequired == nil || *d.Spec.AttachRequired {
		c.failf("CSIDriver attachRequired must be false")
	}
	if d.Spec.PodInfoOnMount == nil || !*d.Spec.PodInfoOnMount {
		c.failf("CSIDriver podInfoOnMount must be true")
	}
	if d.Spec.RequiresRepublish == nil || *d.Spec.RequiresRepublish {
		c.failf("CSIDriver requiresRepublish must be false")
	}
	if d.Spec.FSGroupPolicy == nil || *d.Spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		c.failf("CSIDriver fsGroupPolicy must be File")
	}
	if len(d.Spec.VolumeLifecycleModes) != 1 || d.Spec.VolumeLifecycleModes[0] != storagev1.VolumeLifecyclePersistent {
		c.failf("CSIDriver volumeLifecycleModes must be [Persistent], got %v", d.Spec.VolumeLifecycleModes)
	}
	if opt.TokenInSecrets && (d.Spec.ServiceAccountTokenInSecrets == nil || !*d.Spec.ServiceAccountTokenInSecrets) {
		c.failf("CSIDriver serviceAccountTokenInSecrets must be true")
	}
	if !opt.TokenInSecrets && d.Spec.ServiceAccountTokenInSecrets != nil {
		c.failf("CSIDriver serviceAccountTokenInSecrets must be absent when turned off (older API servers)")
	}
	if len(d.Spec.TokenRequests) != 1 || d.Spec.TokenRequests[0].Audience == "" {
		c.failf("CSIDriver must request exactly one token with a non-empty audience, got %v", d.Spec.TokenRequests)
	} else {
		audience = d.Spec.TokenRequests[0].Audience
	}

	// Controller.
	dep := controllers[0]
	ps := &dep.Spec.Template.Spec
	who := "controller " + dep.Name
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < opt.MinReplicas {
		c.failf("%s: replicas must be at least %d", who, opt.MinReplicas)
	}
	ctl := findContainer(ps, "sealvol")
	var brokerPort string
	var ctlTLS, ctlMTLS bool
	if ctl == nil {
		c.failf("%s: no container named sealvol", who)
	} else {
		sub, f := parseArgs(c, who, ctl.Args)
		if sub != "controller" {
			c.failf("%s: first argument %q, want controller", who, sub)
		}
		checkFlagsExist(c, who, f, opt.ControllerFlags)
		requireFlags(c, who, f, "endpoint", "kms", "broker-listen", "issuer", "audience", "node-service-account", "audit-log")
		n := 0
		for _, k := range []string{"jwks-file", "jwks-url", "oidc-issuer-url"} {
			if _, ok := f[k]; ok {
				n++
			}
		}
		if n != 1 {
			c.failf("%s: exactly one of --jwks-file, --jwks-url, --oidc-issuer-url must be given, got %d", who, n)
		}
		if f["audience"] != audience {
			c.failf("%s: --audience=%q differs from the CSIDriver tokenRequests audience %q", who, f["audience"], audience)
		}
		ds := nodes[0]
		wantSA := ds.Namespace + ":" + ds.Spec.Template.Spec.ServiceAccountName
		if f["node-service-account"] != wantSA {
			c.failf("%s: --node-service-account=%q, the node DaemonSet runs as %q", who, f["node-service-account"], wantSA)
		}
		if _, port, err := net.SplitHostPort(f["broker-listen"]); err != nil {
			c.failf("%s: --broker-listen=%q is not HOST:PORT: %v", who, f["broker-listen"], err)
		} else {
			brokerPort = port
		}
		checkFiles(c, who, ps, ctl, f, "broker-tls-cert", "broker-tls-key", "broker-client-ca",
			"jwks-file", "jwks-ca-file", "jwks-bearer-token-file")
		if (f["broker-tls-cert"] == "") != (f["broker-tls-key"] == "") {
			c.failf("%s: --broker-tls-cert and --broker-tls-key go together", who)
		}
		ctlTLS, ctlMTLS = f["broker-tls-cert"] != "", f["broker-client-ca"] != ""
		if kms := f["kms"]; strings.HasPrefix(kms, "vault+") {
			u, err := url.Parse(strings.TrimPrefix(kms, "vault+"))
			if err != nil {
				c.failf("%s: --kms=%q does not parse: %v", who, kms, err)
			} else {
				for _, p := range []string{"jwt_file", "ca_file", "token_file"} {
					if file := u.Query().Get(p); file != "" && mountUnder(ctl, file) == nil {
						c.failf("%s: --kms %s=%s is not inside a volume mount", who, p, file)
					}
				}
			}
		}
		if m := mountUnder(ctl, f["audit-log"]); m == nil || m.ReadOnly {
			c.failf("%s: --audit-log=%s is not on a writable volume (the root filesystem is read-only)", who, f["audit-log"])
		}
		socket := endpointSocket(c, who, f["endpoint"])
		for _, img := range []string{"csi-provisioner", "csi-resizer", "csi-snapshotter", "livenessprobe"} {
			sc := containerByImage(ps, img)
			if sc == nil {
				c.failf("%s: no %s sidecar", who, img)
				continue
			}
			if socket != "" {
				sidecarSocketCheck(c, who, ps, ctl, sc, socket)
			}
			if img == "csi-provisioner" {
				_, pf := parseArgs(c, who+"/csi-provisioner", sc.Args)
				if v, ok := pf["extra-create-metadata"]; !ok || (v != "" && v != "true") {
					c.failf("%s: csi-provisioner needs --extra-create-metadata (the tenant comes from csi.storage.k8s.io/pvc/namespace)", who)
				}
				if !strings.Contains(pf["feature-gates"], "Topology=true") {
					c.failf("%s: csi-provisioner needs --feature-gates=Topology=true", who)
				}
			}
		}
		sec := ctl.SecurityContext
		psc := ps.SecurityContext
		nonRoot := (sec != nil && sec.RunAsNonRoot != nil && *sec.RunAsNonRoot) ||
			(psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
		if !nonRoot {
			c.failf("%s: sealvol container must run as non-root", who)
		}
		if sec == nil || sec.ReadOnlyRootFilesystem == nil || !*sec.ReadOnlyRootFilesystem {
			c.failf("%s: sealvol container must have a read-only root filesystem", who)
		}
		if sec == nil || sec.AllowPrivilegeEscalation == nil || *sec.AllowPrivilegeEscalation {
			c.failf("%s: sealvol container must set allowPrivilegeEscalation: false", who)
		}
		if sec != nil && sec.Privileged != nil && *sec.Privileged {
			c.failf("%s: controller must not be privileged", who)
		}
		for _, v := range RestrictedViolations(ps) {
			c.failf("%s: violates Pod Security restricted: %s", who, v)
		}
	}
	if !serviceAccts[dep.Namespace+":"+ps.ServiceAccountName] {
		c.failf("%s: service account %q is not rendered", who, ps.ServiceAccountName)
	}
	podLabels := labels.Set(dep.Spec.Template.Labels)
	pdbOK := false
	for _, p := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && p.Namespace == dep.Namespace && sel.Matches(podLabels) {
			pdbOK = true
		}
	}
	if !pdbOK {
		c.failf("%s: no PodDisruptionBudget selects the controller pods", who)
	}

	// Broker Service: selects the controller pods on the broker port.
	var broker *corev1.Service
	for _, s := range services {
		if s.Namespace == dep.Namespace && len(s.Spec.Selector) > 0 &&
			labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			for _, p := range s.Spec.Ports {
				if p.Name == "broker" {
					broker = s
				}
			}
		}
	}
	brokerAddr := ""
	if broker == nil {
		c.failf("no Service with a port named broker selects the controller pods")
	} else {
		for _, p := range broker.Spec.Ports {
			if p.Name != "broker" {
				continue
			}
			tp := p.TargetPort.String()
			if tp == "broker" && ctl != nil {
				tp = ""
				for _, cp := range ctl.Ports {
					if cp.Name == "broker" {
						tp = fmt.Sprint(cp.ContainerPort)
					}
				}
			}
			if tp != brokerPort {
				c.failf("Service %s: broker targetPort resolves to %q, controller listens on %q", broker.Name, tp, brokerPort)
			}
			brokerAddr = fmt.Sprintf("%s.%s.svc:%d", broker.Name, broker.Namespace, p.Port)
		}
	}

	// Node.
	ds := nodes[0]
	ns := &ds.Spec.Template.Spec
	who = "node " + ds.Name
	nd := findContainer(ns, "sealvol")
	if nd == nil {
		c.failf("%s: no container named sealvol", who)
	} else {
		sub, f := parseArgs(c, who, nd.Args)
		if sub != "node" {
			c.failf("%s: first argument %q, want node", who, sub)
		}
		checkFlagsExist(c, who, f, opt.NodeFlags)
		requireFlags(c, who, f, "endpoint", "node-id", "state-dir", "broker", "node-token-file")
		if nd.SecurityContext == nil || nd.SecurityContext.Privileged == nil || !*nd.SecurityContext.Privileged {
			c.failf("%s: sealvol container must be privileged (mount, loop devices, /dev/fuse)", who)
		}
		checkFiles(c, who, ns, nd, f, "node-token-file", "broker-ca", "broker-client-cert", "broker-client-key")
		if ctlTLS && f["broker-ca"] == "" {
			c.failf("%s: the broker serves TLS but the node has no --broker-ca to verify it", who)
		}
		if !ctlTLS && f["broker-ca"] != "" {
			c.failf("%s: --broker-ca given but the broker serves no TLS", who)
		}
		if ctlMTLS != (f["broker-client-cert"] != "" && f["broker-client-key"] != "") {
			c.failf("%s: the broker's --broker-client-ca and the node's --broker-client-cert/--broker-client-key must come together", who)
		}
		if brokerAddr != "" && f["broker"] != brokerAddr {
			c.failf("%s: --broker=%q, the broker Service is %q", who, f["broker"], brokerAddr)
		}
		if f["node-id"] == "$(NODE_NAME)" {
			ok := false
			for _, e := range nd.Env {
				if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
					e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
					ok = true
				}
			}
			if !ok {
				c.failf("%s: --node-id uses $(NODE_NAME) but NODE_NAME is not spec.nodeName", who)
			}
		} else {
			c.failf("%s: --node-id must be the Kubernetes node name ($(NODE_NAME)), got %q", who, f["node-id"])
		}
		// The projected token the node presents to the broker.
		tokenFile := f["node-token-file"]
		m := mountUnder(nd, tokenFile)
		tokenOK := false
		if m != nil {
			if v := volume(ns, m.Name); v != nil && v.Projected != nil {
				for _, src := range v.Projected.Sources {
					t := src.ServiceAccountToken
					if t != nil && path.Join(m.MountPath, t.Path) == path.Clean(tokenFile) {
						tokenOK = true
						if t.Audience != audience {
							c.failf("%s: projected token audience %q, the broker's audience is %q", who, t.Audience, audience)
						}
					}
				}
			}
		}
		if !tokenOK {
			c.failf("%s: --node-token-file=%s is not a projected serviceAccountToken", who, tokenFile)
		}
		kubelet := mountFor(nd, opt.KubeletDir)
		if kubelet == nil || kubelet.MountPropagation == nil || *kubelet.MountPropagation != corev1.MountPropagationBidirectional {
			c.failf("%s: %s must be mounted with Bidirectional propagation", who, opt.KubeletDir)
		} else if hostPathOf(ns, kubelet) != opt.KubeletDir {
			c.failf("%s: %s is not the host's kubelet directory", who, opt.KubeletDir)
		}
		if hostPathOf(ns, mountFor(nd, "/dev")) != "/dev" {
			c.failf("%s: the host's /dev is not mounted at /dev", who)
		}
		if hostPathOf(ns, mountFor(nd, f["state-dir"])) == "" {
			c.failf("%s: --state-dir=%s is not a hostPath volume", who, f["state-dir"])
		}
		socket := endpointSocket(c, who, f["endpoint"])
		pluginDir := path.Join(opt.KubeletDir, "plugins", driverName)
		if socket != "" && hostPathOf(ns, mountFor(nd, path.Dir(socket))) != pluginDir {
			c.failf("%s: socket directory %s is not the host's %s", who, path.Dir(socket), pluginDir)
		}
		for _, img := range []string{"csi-node-driver-registrar", "livenessprobe"} {
			sc := containerByImage(ns, img)
			if sc == nil {
				c.failf("%s: no %s sidecar", who, img)
				continue
			}
			if socket != "" {
				sidecarSocketCheck(c, who, ns, nd, sc, socket)
			}
			if img == "csi-node-driver-registrar" {
				_, rf := parseArgs(c, who+"/registrar", sc.Args)
				if rf["kubelet-registration-path"] != path.Join(pluginDir, "csi.sock") {
					c.failf("%s: --kubelet-registration-path=%q, want %q", who, rf["kubelet-registration-path"], path.Join(pluginDir, "csi.sock"))
				}
			}
		}
	}
	if ns.PriorityClassName == "" {
		c.failf("%s: no priorityClassName", who)
	} else if !strings.HasPrefix(ns.PriorityClassName, "system-") && !priorities[ns.PriorityClassName] {
		c.failf("%s: PriorityClass %q is not rendered", who, ns.PriorityClassName)
	}
	if len(ns.Tolerations) == 0 {
		c.failf("%s: no tolerations (dedicated GPU nodes would get no node plugin)", who)
	}
	if ns.HostNetwork {
		c.failf("%s: hostNetwork would put the node plugin outside the NetworkPolicies", who)
	}
	if !serviceAccts[ds.Namespace+":"+ns.ServiceAccountName] {
		c.failf("%s: service account %q is not rendered", who, ns.ServiceAccountName)
	}

	// StorageClasses.
	for _, sc := range classes {
		w := "StorageClass " + sc.Name
		if sc.Provisioner != driverName {
			c.failf("%s: provisioner %q", w, sc.Provisioner)
		}
		if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
			c.failf("%s: volumeBindingMode must be WaitForFirstConsumer (node-local volumes)", w)
		}
		if sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
			c.failf("%s: allowVolumeExpansion must be true", w)
		}
		if _, both := sc.Parameters["csi.storage.k8s.io/fstype"]; both && sc.Parameters["fsType"] != "" {
			c.failf("%s: fsType and csi.storage.k8s.io/fstype together make csi-provisioner refuse the class", w)
		}
		if !strings.Contains(sc.Parameters["kmsKeyTemplate"], "${namespace}") {
			c.failf("%s: kmsKeyTemplate must contain ${namespace} (one KEK per tenant)", w)
		}
		for _, p := range []string{"kmsKeyTemplate", "allowedServiceAccounts"} {
			if sc.Parameters[p] == "" {
				c.failf("%s: parameter %s missing", w, p)
			}
		}
	}
	return c.failures
}

const saTokenDir = "/var/run/secrets/kubernetes.io/serviceaccount/"

// checkFiles: each file flag that is set names a file the container can see:
// inside one of its volume mounts, or in the automounted service-account
// directory when the pod does not turn automounting off.
func checkFiles(c *checker, who string, spec *corev1.PodSpec, ctr *corev1.Container, flags map[string]string, names ...string) {
	for _, n := range names {
		file, ok := flags[n]
		if !ok {
			continue
		}
		if strings.HasPrefix(file, saTokenDir) {
			if spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken {
				c.failf("%s: --%s=%s but the pod does not automount its service-account token", who, n, file)
			}
			continue
		}
		if mountUnder(ctr, file) == nil {
			c.failf("%s: --%s=%s is not inside a volume mount", who, n, file)
		}
	}
}

// mountUnder returns the mount whose directory holds file.
func mountUnder(ctr *corev1.Container, file string) *corev1.VolumeMount {
	if file == "" {
		return nil
	}
	var best *corev1.VolumeMount
	for i := range ctr.VolumeMounts {
		m := &ctr.VolumeMounts[i]
		dir := path.Clean(m.MountPath)
		if strings.HasPrefix(path.Clean(file), dir+"/") && (best == nil || len(dir) > len(best.MountPath)) {
			best = m
		}
	}
	return best
}
