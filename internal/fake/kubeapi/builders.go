package kubeapi

//lint:file-ignore SA1019 Prometheus's endpoints role lists and watches core/v1 Endpoints, so the fake serves them.

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// NewNode returns a Ready node with InternalIP ip and hostname name.
func NewNode(name, ip string, nodeLabels map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: maps.Clone(nodeLabels)},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip},
				{Type: corev1.NodeHostName, Address: name},
			},
			Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		},
	}
}

// NewPod returns a Running, Ready pod on node with IP ip and one container
// "main" exposing ports.
func NewPod(namespace, name, node, ip string, podLabels, annotations map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: maps.Clone(podLabels), Annotations: maps.Clone(annotations)},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "main", Image: "example/main:1", Ports: ports}},
		},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			PodIP:             ip,
			PodIPs:            []corev1.PodIP{{IP: ip}},
			HostIP:            "",
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "main", Ready: true, Image: "example/main:1", ContainerID: "containerd://" + namespace + "-" + name}},
		},
	}
}

// NewService returns a ClusterIP service selecting selector.
func NewService(namespace, name, clusterIP string, selector, annotations map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}, Annotations: maps.Clone(annotations)},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
			Selector:   maps.Clone(selector),
			Ports:      ports,
		},
	}
}

// EndpointsFor returns the Endpoints and the EndpointSlice (named
// <service>-fake) the endpoints controllers would write for svc given pods:
// every Running pod in the service's namespace matching its selector, each
// service port resolved to the container port of the same number or name.
func EndpointsFor(svc *corev1.Service, pods []*corev1.Pod) (*corev1.Endpoints, *discoveryv1.EndpointSlice) {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name, Labels: maps.Clone(svc.Labels)}}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: svc.Name + "-fake",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	var subset corev1.EndpointSubset
	for _, sp := range svc.Spec.Ports {
		subset.Ports = append(subset.Ports, corev1.EndpointPort{Name: sp.Name, Port: targetPort(sp, pods), Protocol: sp.Protocol})
		name, port, proto := sp.Name, targetPort(sp, pods), sp.Protocol
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto})
	}
	for _, p := range pods {
		if p.Namespace != svc.Namespace || len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(p.Labels)) || p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		node := p.Spec.NodeName
		ref := &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
		subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: p.Status.PodIP, NodeName: &node, TargetRef: ref})
		ready := true
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready},
			NodeName:   &node,
			TargetRef:  ref,
		})
	}
	if len(subset.Addresses) > 0 {
		ep.Subsets = []corev1.EndpointSubset{subset}
	}
	return ep, slice
}

func targetPort(sp corev1.ServicePort, pods []*corev1.Pod) int32 {
	switch {
	case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0:
		return sp.TargetPort.IntVal
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		for _, p := range pods {
			for _, c := range p.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == sp.TargetPort.StrVal {
						return cp.ContainerPort
					}
				}
			}
		}
	}
	return sp.Port
}
