package kubeapi

import (
	"fmt"
	"os"
)

// WriteKubeconfig writes a kubeconfig file at path whose current context
// points at the fake served on url (http, no credentials), for clients
// configured by kubeconfig rather than by API server URL.
func WriteKubeconfig(path, url string) error {
	const tmpl = `apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
users:
- name: fake
  user: {}
current-context: fake
`
	if err := os.WriteFile(path, fmt.Appendf(nil, tmpl, url), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
