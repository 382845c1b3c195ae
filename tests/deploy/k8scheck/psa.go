package main

// The Pod Security Standards' "restricted" profile, checked on pod templates
// (the rules of https://kubernetes.io/docs/concepts/security/pod-security-standards/
// that a manifest alone decides). Used for the controller pod, and for every
// workload of deploy/examples placed in a namespace that enforces restricted.

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// RestrictedViolations lists why spec would be refused by a namespace that
// enforces Pod Security "restricted".
func RestrictedViolations(spec *corev1.PodSpec) []string {
	var v []string
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		v = append(v, "host namespaces")
	}
	for _, vol := range spec.Volumes {
		src := vol.VolumeSource
		if !(src.ConfigMap != nil || src.CSI != nil || src.DownwardAPI != nil || src.EmptyDir != nil ||
			src.Ephemeral != nil || src.PersistentVolumeClaim != nil || src.Projected != nil || src.Secret != nil) {
			v = append(v, fmt.Sprintf("volume %s has a type restricted forbids", vol.Name))
		}
	}
	psc := spec.SecurityContext
	podNonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podSeccomp := psc != nil && psc.SeccompProfile != nil &&
		(psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault || psc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost)
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		v = append(v, "pod runAsUser 0")
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if sc.Privileged != nil && *sc.Privileged {
			v = append(v, c.Name+": privileged")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			v = append(v, c.Name+": allowPrivilegeEscalation must be false")
		}
		if !(podNonRoot || (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)) || (sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot) {
			v = append(v, c.Name+": runAsNonRoot must be true")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			v = append(v, c.Name+": runAsUser 0")
		}
		cs := sc.SeccompProfile
		if cs != nil && cs.Type == corev1.SeccompProfileTypeUnconfined {
			v = append(v, c.Name+": seccomp Unconfined")
		} else if cs == nil && !podSeccomp {
			v = append(v, c.Name+": no RuntimeDefault/Localhost seccomp profile")
		}
		dropsAll := false
		if sc.Capabilities != nil {
			for _, d := range sc.Capabilities.Drop {
				if d == "ALL" {
					dropsAll = true
				}
			}
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					v = append(v, fmt.Sprintf("%s: adds capability %s", c.Name, a))
				}
			}
		}
		if !dropsAll {
			v = append(v, c.Name+": must drop ALL capabilities")
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				v = append(v, fmt.Sprintf("%s: hostPort %d", c.Name, p.HostPort))
			}
		}
	}
	return v
}

// podTemplate returns the pod spec of a workload object, or nil.
func podTemplate(o *Object) *corev1.PodSpec {
	switch t := o.Typed.(type) {
	case *corev1.Pod:
		return &t.Spec
	case *appsv1.Deployment:
		return &t.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &t.Spec.Template.Spec
	case *appsv1.StatefulSet:
		return &t.Spec.Template.Spec
	case *batchv1.Job:
		return &t.Spec.Template.Spec
	case *batchv1.CronJob:
		return &t.Spec.JobTemplate.Spec.Template.Spec
	}
	return nil
}

// CheckPodSecurity checks every workload whose namespace (a Namespace object
// among objs) enforces "restricted". It fails when no such workload exists,
// so an example that silently stopped being checked is noticed.
func CheckPodSecurity(objs []*Object) (checked int, failures []string) {
	restricted := map[string]bool{}
	for _, o := range objs {
		if ns, ok := o.Typed.(*corev1.Namespace); ok &&
			ns.Labels["pod-security.kubernetes.io/enforce"] == "restricted" {
			restricted[ns.Name] = true
		}
	}
	for _, o := range objs {
		spec := podTemplate(o)
		if spec == nil || !restricted[o.Meta.Namespace] {
			continue
		}
		checked++
		for _, v := range RestrictedViolations(spec) {
			failures = append(failures, fmt.Sprintf("%s: %s", o, v))
		}
	}
	if checked == 0 {
		failures = append(failures, "no workload in a namespace that enforces restricted")
	}
	return checked, failures
}
