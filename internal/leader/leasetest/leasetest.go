// Package leasetest is an HTTP fake of the Kubernetes Lease API
// (coordination.k8s.io/v1) for tests of leader election through the real
// client-go clientset: GET, POST and PUT of
// /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}], with
// resourceVersion optimistic concurrency as the API server does it (a PUT
// with a stale resourceVersion fails with 409 Conflict, a POST of an
// existing name with 409 AlreadyExists, a GET of a missing one with 404).
// It takes request bodies in JSON or protobuf and answers in JSON.
package leasetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

var leaseResource = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// Server is the fake API server. Its zero value is not usable; call New.
type Server struct {
	mu     sync.Mutex
	leases map[string]*coordinationv1.Lease // by namespace/name
	rv     int64
	down   bool
	puts   int
}

// New returns an empty fake.
func New() *Server {
	return &Server{leases: map[string]*coordinationv1.Lease{}}
}

// Start serves s on 127.0.0.1 until the returned server is closed.
func (s *Server) Start() *httptest.Server {
	return httptest.NewServer(s)
}

// Clientset returns a real client-go clientset for the fake at url, with
// client-go's default encodings. Its rate limit is raised above client-go's
// default (5/s), which tests with sub-second retry periods would hit.
func Clientset(url string) (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(&rest.Config{Host: url, QPS: 1000, Burst: 1000})
}

// Lease returns a copy of a stored Lease, or nil.
func (s *Server) Lease(namespace, name string) *coordinationv1.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[namespace+"/"+name]
	if !ok {
		return nil
	}
	return l.DeepCopy()
}

// Holder returns the holderIdentity of a stored Lease ("" if none).
func (s *Server) Holder(namespace, name string) string {
	l := s.Lease(namespace, name)
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// SetDown makes every request fail with 503 while down is true, as an
// unreachable API server would for a client's purposes.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Updates counts successful PUTs (renewals, takeovers and releases).
func (s *Server) Updates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

const prefix = "/apis/coordination.k8s.io/v1/namespaces/"

// ServeHTTP implements the Lease API subset leader election uses.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		writeStatus(w, apierrors.NewServiceUnavailable("fake API server is down"))
		return
	}
	ns, name, ok := parsePath(r.URL.Path)
	if !ok {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
		return
	}
	key := ns + "/" + name
	switch {
	case r.Method == http.MethodGet && name != "":
		l, ok := s.leases[key]
		if !ok {
			writeStatus(w, apierrors.NewNotFound(leaseResource, name))
			return
		}
		writeObject(w, http.StatusOK, l)
	case r.Method == http.MethodPost && name == "":
		l, err := decodeLease(r)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		key = ns + "/" + l.Name
		if _, exists := s.leases[key]; exists {
			writeStatus(w, apierrors.NewAlreadyExists(leaseResource, l.Name))
			return
		}
		l.Namespace = ns
		s.store(key, l)
		writeObject(w, http.StatusCreated, l)
	case r.Method == http.MethodPut && name != "":
		l, err := decodeLease(r)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		old, ok := s.leases[key]
		if !ok {
			writeStatus(w, apierrors.NewNotFound(leaseResource, name))
			return
		}
		if l.ResourceVersion != old.ResourceVersion {
			writeStatus(w, apierrors.NewConflict(leaseResource, name,
				errString("the object has been modified; please apply your changes to the latest version and try again")))
			return
		}
		l.Namespace, l.Name = ns, name
		s.store(key, l)
		s.puts++
		writeObject(w, http.StatusOK, l)
	default:
		writeStatus(w, apierrors.NewMethodNotSupported(leaseResource, r.Method))
	}
}

// decodeLease decodes a request body in any encoding the API server takes
// (client-go sends protobuf for built-in types, JSON when so configured).
func decodeLease(r *http.Request) (*coordinationv1.Lease, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
	if err != nil {
		return nil, err
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return nil, fmt.Errorf("body is a %T, not a Lease", obj)
	}
	return l, nil
}

func (s *Server) store(key string, l *coordinationv1.Lease) {
	s.rv++
	l.ResourceVersion = strconv.FormatInt(s.rv, 10)
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	s.leases[key] = l.DeepCopy()
}

// parsePath splits .../namespaces/{ns}/leases[/{name}].
func parsePath(p string) (ns, name string, ok bool) {
	if len(p) <= len(prefix) || p[:len(prefix)] != prefix {
		return "", "", false
	}
	rest := p[len(prefix):]
	var parts []string
	start := 0
	for i := 0; i <= len(rest); i++ {
		if i == len(rest) || rest[i] == '/' {
			parts = append(parts, rest[start:i])
			start = i + 1
		}
	}
	switch {
	case len(parts) == 2 && parts[1] == "leases":
		return parts[0], "", true
	case len(parts) == 3 && parts[1] == "leases" && parts[2] != "":
		return parts[0], parts[2], true
	}
	return "", "", false
}

type errString string

func (e errString) Error() string { return string(e) }

func writeObject(w http.ResponseWriter, code int, obj any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(obj)
}

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	writeObject(w, int(st.Code), &st)
}
