package main

// Strict decoding of rendered manifests into the Kubernetes API types.
//
// Each YAML document is converted to JSON (duplicate keys are an error) and
// decoded with sigs.k8s.io/json in strict mode into the typed object that its
// apiVersion/kind names. That is the decoder the API server itself uses for
// strict field validation: field names are case-sensitive, an unknown field or
// a value of the wrong type is an error. A kind we have no type for is an
// error too, so nothing passes unchecked.

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest document.
type Object struct {
	Source string // file and document index, for messages
	GVK    schema.GroupVersionKind
	Meta   metav1.ObjectMeta
	Typed  interface{} // *appsv1.Deployment, *storagev1.CSIDriver, ...
}

func (o *Object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.GVK.Kind, o.Meta.Namespace, o.Meta.Name, o.Source)
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		rbacv1.AddToScheme, storagev1.AddToScheme, networkingv1.AddToScheme,
		policyv1.AddToScheme, schedulingv1.AddToScheme, nodev1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Custom resources the chart can render. The Go types below mirror the
// upstream CRD schemas (monitoring.coreos.com/v1 ServiceMonitor, cert-manager.io/v1
// Certificate) for the fields the chart uses; any other field fails, which is
// the conservative direction: a typo cannot pass.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames,omitempty"`
			Any        bool     `json:"any,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		CommonName  string   `json:"commonName,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

var customKinds = map[schema.GroupVersionKind]func() interface{}{
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}: func() interface{} { return &serviceMonitor{} },
	{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}:          func() interface{} { return &certificate{} },
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocuments returns the non-empty YAML documents of a multi-document
// stream (documents holding only comments are dropped).
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		empty := true
		for _, line := range strings.Split(d, "\n") {
			t := strings.TrimSpace(line)
			if t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// decodeDocument strictly decodes one YAML document.
func decodeDocument(s *runtime.Scheme, source string, doc []byte) (*Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: YAML: %w", source, err)
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return nil, fmt.Errorf("%s: reading apiVersion/kind: %w", source, err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, fmt.Errorf("%s: document has no apiVersion or kind", source)
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	var obj interface{}
	if mk, ok := customKinds[gvk]; ok {
		obj = mk()
	} else {
		ro, err := s.New(gvk)
		if err != nil {
			return nil, fmt.Errorf("%s: no API type for %s: %w", source, gvk, err)
		}
		obj = ro
	}
	strictErrs, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", source, gvk.Kind, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s: %s: strict decoding: %s", source, gvk.Kind, strings.Join(msgs, "; "))
	}
	o := &Object{Source: source, GVK: gvk, Typed: obj}
	if acc, ok := obj.(metav1.Object); ok {
		o.Meta = metav1.ObjectMeta{Name: acc.GetName(), Namespace: acc.GetNamespace(), Labels: acc.GetLabels()}
	}
	if o.Meta.Name == "" {
		return nil, fmt.Errorf("%s: %s has no metadata.name", source, gvk.Kind)
	}
	return o, nil
}

// clusterScoped lists the kinds that must not carry a namespace; every other
// kind must carry one, so that `helm template | kubectl apply` cannot put an
// object into whatever namespace happens to be current.
var clusterScoped = map[string]bool{
	"CSIDriver": true, "StorageClass": true, "ClusterRole": true,
	"ClusterRoleBinding": true, "PriorityClass": true, "RuntimeClass": true,
	"Namespace": true, "Node": true,
}

// DecodeFiles strictly decodes every document of every file.
func DecodeFiles(paths []string) ([]*Object, error) {
	s, err := newScheme()
	if err != nil {
		return nil, err
	}
	var objs []*Object
	var errs []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
		for i, doc := range splitDocuments(data) {
			o, err := decodeDocument(s, fmt.Sprintf("%s#%d", p, i), doc)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if clusterScoped[o.GVK.Kind] && o.Meta.Namespace != "" {
				errs = append(errs, fmt.Sprintf("%s: cluster-scoped but has namespace %q", o, o.Meta.Namespace))
			}
			if !clusterScoped[o.GVK.Kind] && o.Meta.Namespace == "" {
				errs = append(errs, fmt.Sprintf("%s: namespaced kind without metadata.namespace", o))
			}
			objs = append(objs, o)
		}
	}
	if len(errs) > 0 {
		return objs, fmt.Errorf("%d invalid object(s):\n  %s", len(errs), strings.Join(errs, "\n  "))
	}
	return objs, nil
}
