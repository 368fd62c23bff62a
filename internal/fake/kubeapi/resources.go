package kubeapi

//lint:file-ignore SA1019 Prometheus's endpoints role lists and watches core/v1 Endpoints, so the fake serves them.

import (
	"reflect"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
)

// resource describes one served resource type.
type resource struct {
	group, version string
	name           string // plural, as in the URL
	kind           string
	namespaced     bool
	goType         reflect.Type
	// fields returns the field set the apiserver lets field selectors
	// match, beyond metadata.name and metadata.namespace.
	fields func(runtime.Object) fields.Set
}

func (r *resource) apiVersion() string {
	if r.group == "" {
		return r.version
	}
	return r.group + "/" + r.version
}

// resources are the types the fake serves: what Prometheus's kubernetes SD
// lists and watches for every role and attach_metadata option.
var resources = []*resource{
	{version: "v1", name: "pods", kind: "Pod", namespaced: true, goType: reflect.TypeFor[corev1.Pod](), fields: podFields},
	{version: "v1", name: "nodes", kind: "Node", goType: reflect.TypeFor[corev1.Node](), fields: func(o runtime.Object) fields.Set {
		return fields.Set{"spec.unschedulable": strconv.FormatBool(o.(*corev1.Node).Spec.Unschedulable)}
	}},
	{version: "v1", name: "services", kind: "Service", namespaced: true, goType: reflect.TypeFor[corev1.Service](), fields: func(o runtime.Object) fields.Set {
		s := o.(*corev1.Service)
		return fields.Set{"spec.clusterIP": s.Spec.ClusterIP, "spec.type": string(s.Spec.Type)}
	}},
	{version: "v1", name: "endpoints", kind: "Endpoints", namespaced: true, goType: reflect.TypeFor[corev1.Endpoints]()},
	{version: "v1", name: "namespaces", kind: "Namespace", goType: reflect.TypeFor[corev1.Namespace](), fields: func(o runtime.Object) fields.Set {
		return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
	}},
	{group: "discovery.k8s.io", version: "v1", name: "endpointslices", kind: "EndpointSlice", namespaced: true, goType: reflect.TypeFor[discoveryv1.EndpointSlice](), fields: func(o runtime.Object) fields.Set {
		return fields.Set{"addressType": string(o.(*discoveryv1.EndpointSlice).AddressType)}
	}},
	{group: "networking.k8s.io", version: "v1", name: "ingresses", kind: "Ingress", namespaced: true, goType: reflect.TypeFor[networkingv1.Ingress]()},
	{group: "apps", version: "v1", name: "replicasets", kind: "ReplicaSet", namespaced: true, goType: reflect.TypeFor[appsv1.ReplicaSet](), fields: func(o runtime.Object) fields.Set {
		return fields.Set{"status.replicas": strconv.Itoa(int(o.(*appsv1.ReplicaSet).Status.Replicas))}
	}},
	{group: "batch", version: "v1", name: "jobs", kind: "Job", namespaced: true, goType: reflect.TypeFor[batchv1.Job](), fields: func(o runtime.Object) fields.Set {
		return fields.Set{"status.successful": strconv.Itoa(int(o.(*batchv1.Job).Status.Succeeded))}
	}},
}

func podFields(o runtime.Object) fields.Set {
	p := o.(*corev1.Pod)
	ips := make([]string, 0, len(p.Status.PodIPs))
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.podIPs":            strings.Join(ips, ","),
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}
