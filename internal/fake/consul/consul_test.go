package consul_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	promconsul "github.com/prometheus/prometheus/discovery/consul"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v2"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/consul"
	"github.com/shardscrape/shardscrape/internal/fake/sdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// http.Transport keeps idle connections' goroutines briefly.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func serve(t *testing.T, c *consul.Catalog) *fake.Server {
	t.Helper()
	srv, err := fake.Serve(c)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return srv
}

func runSD(t *testing.T, addr, extra string) *sdtest.Groups {
	t.Helper()
	var conf promconsul.SDConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte("server: "+addr+"\nrefresh_interval: 50ms\n"+extra), &conf))
	return sdtest.Run(t, &conf)
}

func TestPrometheusConsulSD(t *testing.T) {
	c := consul.New("east")
	c.SetNode(consul.Node{Name: "n1", Address: "10.0.0.1", Meta: map[string]string{"rack": "r1", "team-x": "y"}, TaggedAddresses: map[string]string{"lan": "10.0.0.1"}})
	c.SetNode(consul.Node{Name: "n2", Address: "10.0.0.2"})
	require.NoError(t, c.SetService(consul.Service{Node: "n1", ID: "web-1", Name: "web", Port: 8080, Tags: []string{"a", "b"}, Meta: map[string]string{"version": "1"}, Health: consul.Passing}))
	require.NoError(t, c.SetService(consul.Service{Node: "n2", ID: "web-2", Name: "web", Address: "10.1.0.5", Port: 9090, Tags: []string{"a"}}))
	require.ErrorIs(t, c.SetService(consul.Service{Node: "nope", Name: "x"}), consul.ErrUnknownNode)
	srv := serve(t, c)

	g := runSD(t, srv.Addr, "")
	require.Eventually(t, func() bool { tg := g.Get("web"); return tg != nil && len(tg.Targets) == 2 }, 10*time.Second, 10*time.Millisecond)
	tg := g.Get("web")
	require.Equal(t, model.LabelSet{"__meta_consul_service": "web", "__meta_consul_dc": "east"}, tg.Labels)
	require.Equal(t, model.LabelSet{
		"__address__":                            "10.0.0.1:8080",
		"__meta_consul_address":                  "10.0.0.1",
		"__meta_consul_node":                     "n1",
		"__meta_consul_namespace":                "",
		"__meta_consul_partition":                "",
		"__meta_consul_tags":                     ",a,b,",
		"__meta_consul_service_address":          "",
		"__meta_consul_service_port":             "8080",
		"__meta_consul_service_id":               "web-1",
		"__meta_consul_health":                   "passing",
		"__meta_consul_metadata_rack":            "r1",
		"__meta_consul_metadata_team_x":          "y",
		"__meta_consul_service_metadata_version": "1",
		"__meta_consul_tagged_address_lan":       "10.0.0.1",
	}, tg.Targets[0])
	require.Equal(t, model.LabelValue("10.1.0.5:9090"), tg.Targets[1]["__address__"])

	// Health changes propagate through the blocking query.
	require.NoError(t, c.SetServiceHealth("n1", "web-1", consul.Critical))
	require.Eventually(t, func() bool {
		tg := g.Get("web")
		return len(tg.Targets) == 2 && tg.Targets[0]["__meta_consul_health"] == "critical"
	}, 10*time.Second, 10*time.Millisecond)

	// A new service appears through the catalog watch, a removed one is cleared.
	require.NoError(t, c.SetService(consul.Service{Node: "n2", ID: "db", Name: "db", Port: 5432}))
	require.Eventually(t, func() bool { tg := g.Get("db"); return tg != nil && len(tg.Targets) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, c.RemoveService("n2", "db"))
	require.Eventually(t, func() bool { tg := g.Get("db"); return tg != nil && len(tg.Targets) == 0 }, 10*time.Second, 10*time.Millisecond)

	// Removing a node removes its instances.
	require.True(t, c.RemoveNode("n2"))
	require.Eventually(t, func() bool { tg := g.Get("web"); return len(tg.Targets) == 1 }, 10*time.Second, 10*time.Millisecond)

	// Node meta updates reach the targets.
	c.SetNode(consul.Node{Name: "n1", Address: "10.0.0.1", Meta: map[string]string{"rack": "r9"}})
	require.Eventually(t, func() bool {
		tg := g.Get("web")
		return len(tg.Targets) == 1 && tg.Targets[0]["__meta_consul_metadata_rack"] == "r9"
	}, 10*time.Second, 10*time.Millisecond)
}

func TestPrometheusConsulSDFilters(t *testing.T) {
	c := consul.New("")
	c.SetNode(consul.Node{Name: "n1", Address: "10.0.0.1", Meta: map[string]string{"env": "prod"}})
	c.SetNode(consul.Node{Name: "n2", Address: "10.0.0.2", Meta: map[string]string{"env": "dev"}})
	for _, n := range []string{"n1", "n2"} {
		require.NoError(t, c.SetService(consul.Service{Node: n, Name: "api", Port: 1, Tags: []string{"metrics"}}))
		require.NoError(t, c.SetService(consul.Service{Node: n, Name: "other", Port: 2}))
	}
	srv := serve(t, c)

	// Named services with tags and node meta: only api on n1.
	g := runSD(t, srv.Addr, "services: [api, other]\ntags: [metrics]\nnode_meta: {env: prod}\n")
	require.Eventually(t, func() bool { tg := g.Get("api"); return tg != nil && len(tg.Targets) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, model.LabelValue("n1"), g.Get("api").Targets[0]["__meta_consul_node"])
	require.Equal(t, model.LabelValue("dc1"), g.Get("api").Labels["__meta_consul_dc"])
	// other lacks the tag: Prometheus never watches it.
	require.Nil(t, g.Get("other"))
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

func TestBlockingQuery(t *testing.T) {
	c := consul.New("")
	c.SetNode(consul.Node{Name: "n1", Address: "10.0.0.1"})
	require.NoError(t, c.SetService(consul.Service{Node: "n1", Name: "web", Port: 80}))
	srv := serve(t, c)

	resp, _ := get(t, srv.URL+"/v1/health/service/web")
	idx := resp.Header.Get("X-Consul-Index")
	require.NotEmpty(t, idx)
	require.Equal(t, "0", resp.Header.Get("X-Consul-LastContact"))

	// No change: the query waits out ?wait and returns the same index.
	resp, _ = get(t, srv.URL+"/v1/health/service/web?index="+idx+"&wait=20ms")
	require.Equal(t, idx, resp.Header.Get("X-Consul-Index"))

	// A change to another service does not wake it; one to this one does.
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/v1/health/service/web?index=" + idx + "&wait=1m")
		if err == nil {
			resp.Body.Close()
		}
		done <- resp
	}()
	require.NoError(t, c.SetService(consul.Service{Node: "n1", Name: "db", Port: 5432}))
	select {
	case <-done:
		t.Fatal("a change of another service woke the query")
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, c.SetServiceHealth("n1", "web", consul.Warning))
	resp = <-done
	require.NotNil(t, resp)
	n, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	require.NoError(t, err)
	require.Equal(t, c.Index(), n)

	// passing filters out an instance whose checks are not all passing.
	_, body := get(t, srv.URL+"/v1/health/service/web?passing=1")
	require.JSONEq(t, `[]`, string(body))
	_, body = get(t, srv.URL+"/v1/catalog/service/web")
	var cs []map[string]any
	require.NoError(t, json.Unmarshal(body, &cs))
	require.Len(t, cs, 1)
	require.Equal(t, "web", cs[0]["ServiceName"])

	resp, _ = get(t, srv.URL+"/v1/catalog/services?dc=elsewhere")
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
}
