package kubeapi

//lint:file-ignore SA1019 the seed config's role: endpoints jobs read v1 Endpoints, deprecated or not.

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// SeedCluster returns a small cluster for the source document's seed config
// (shared/seed/prometheus-seed.yml), where each of its seven jobs finds
// targets: two nodes (the nodes and cadvisor jobs), the apiserver's
// endpoints, three pods of which two are annotated for scraping, two
// services over them (one annotated for scraping and probing), and an
// ingress annotated for probing. Give it to Apply.
func SeedCluster() []runtime.Object {
	var pods []*corev1.Pod
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		NewNode("n1", "10.0.0.1", map[string]string{"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "a"}),
		NewNode("n2", "10.0.0.2", map[string]string{"kubernetes.io/hostname": "n2", "topology.kubernetes.io/zone": "b"}),
	}
	// The apiserver's own service: endpoints without pods.
	api := NewService("default", "kubernetes", "10.96.0.1", nil, nil, corev1.ServicePort{Name: "https", Port: 443, TargetPort: intstr.FromInt32(6443), Protocol: corev1.ProtocolTCP})
	apiEP := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.100"}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: 6443, Protocol: corev1.ProtocolTCP}},
		}},
	}
	objs = append(objs, api, apiEP)
	for i, n := range []string{"n1", "n2", "n1"} {
		ann := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9102"}
		if i == 2 {
			ann = map[string]string{"prometheus.io/scrape": "false"}
		}
		pods = append(pods, NewPod("shop", "web-"+string(rune('0'+i)), n, "10.1.0."+string(rune('1'+i)),
			map[string]string{"app": "web", "tier": "front"}, ann,
			corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			corev1.ContainerPort{Name: "metrics", ContainerPort: 9102, Protocol: corev1.ProtocolTCP}))
	}
	web := NewService("shop", "web", "10.96.0.20", map[string]string{"app": "web"},
		map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9102", "prometheus.io/path": "/m", "prometheus.io/probe": "true"},
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP})
	quiet := NewService("shop", "quiet", "10.96.0.21", map[string]string{"app": "web"}, nil,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP})
	for _, svc := range []*corev1.Service{web, quiet} {
		ep, slice := EndpointsFor(svc, pods)
		objs = append(objs, svc, ep, slice)
	}
	pathType := networkingv1.PathTypePrefix
	objs = append(objs, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"prometheus.io/probe": "true"}},
		Spec: networkingv1.IngressSpec{
			TLS: []networkingv1.IngressTLS{{Hosts: []string{"shop.example.com"}}},
			Rules: []networkingv1.IngressRule{{Host: "shop.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pathType, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}},
			}}}},
		},
	})
	for _, p := range pods {
		objs = append(objs, p)
	}
	return objs
}
