// Package kube builds the Kubernetes clients shardscrape's coordinator uses
// (pod index, leader election) from the same three kinds of flags.
package kube

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient returns a Kubernetes client: from kubeconfig when set
// (apiServer, when set too, overrides its server), else for apiServer (a
// URL, no credentials) when set, else in-cluster. userAgent names the
// component in the API server's logs and audit.
func NewClient(apiServer, kubeconfig, userAgent string) (kubernetes.Interface, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		if cfg, err = clientcmd.BuildConfigFromFlags(apiServer, kubeconfig); err != nil {
			return nil, fmt.Errorf("kubeconfig %q: %w", kubeconfig, err)
		}
	case apiServer != "":
		cfg = &rest.Config{Host: apiServer}
	default:
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
		}
	}
	cfg.UserAgent = userAgent
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %q: %w", cfg.Host, err)
	}
	return c, nil
}
