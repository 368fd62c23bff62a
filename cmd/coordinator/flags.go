package main

import (
	"os"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"

	"github.com/shardscrape/shardscrape/coordinator"
	"github.com/shardscrape/shardscrape/internal/leader"
	"github.com/shardscrape/shardscrape/internal/rpc"
	"github.com/shardscrape/shardscrape/relabel"
)

// Defaults of the coordinator's own flags.
const (
	// defaultWebListenAddress: next to the gRPC default :9094
	// (rpc.DefaultListenAddress), clear of Prometheus's :9090.
	defaultWebListenAddress = ":9093"
	defaultStoragePath      = "data/coordinator"
	defaultLeaseName        = "shardscrape-coordinator"
)

// flagConfig holds every command-line setting.
type flagConfig struct {
	configFile  string
	configCheck bool

	webListenAddress string
	grpc             rpc.ServerOptions

	storagePath         string
	objstoreConfigFile  string
	leaseTTL            time.Duration
	handoffTimeout      time.Duration
	replicationFactor   int
	cluster             relabel.ClusterOptions
	ownershipKey        string
	podEnrichment       bool
	podKubeconfig       string
	podAPIServer        string
	podNamespace        string
	podLabelSelector    string
	podTargetLabels     bool
	podLabelPod         string
	podLabelNamespace   string
	podLabelNode        string
	podLabelPodIP       string
	podIncludeHostNet   bool
	leaderElection      bool
	leaderKubeconfig    string
	leaderAPIServer     string
	leaderNamespace     string
	leaderLeaseName     string
	leaderIdentity      string
	leaderLeaseDuration time.Duration
	leaderRenewDeadline time.Duration
	leaderRetryPeriod   time.Duration

	sdUpdateInterval time.Duration

	log promslog.Config
}

// newApp declares the flags on a kingpin application, Prometheus style;
// parsing fills cfg.
func newApp(cfg *flagConfig) *kingpin.Application {
	a := kingpin.New("coordinator", "The shardscrape coordinator: runs Prometheus service discovery on an unchanged prometheus.yml and splits the targets across a fleet of scraper workers.")
	a.HelpFlag.Short('h')

	a.Flag("config.file", "Prometheus configuration file (global, scrape_configs with any *_sd_configs, remote_write).").
		Default("prometheus.yml").StringVar(&cfg.configFile)
	a.Flag("config.check", "Validate --config.file (as Prometheus loads it, and split for the workers), print the result and exit: 0 when valid, 1 otherwise.").
		BoolVar(&cfg.configCheck)
	a.Flag("web.listen-address", "Address for HTTP: /metrics, /-/healthy, /-/ready, /-/reload, /api/v1/targets, /ring.").
		Default(defaultWebListenAddress).StringVar(&cfg.webListenAddress)
	cfg.grpc.AddFlags(a, "grpc")

	a.Flag("storage.path", "Directory of the coordinator's state (a filesystem bucket) unless --objstore.config-file is set.").
		Default(defaultStoragePath).StringVar(&cfg.storagePath)
	a.Flag("objstore.config-file", "Object storage client configuration (thanos-io/objstore YAML: type S3, GCS, AZURE, FILESYSTEM, ...) for the state. Empty: a filesystem bucket under --storage.path.").
		Default("").StringVar(&cfg.objstoreConfigFile)
	a.Flag("lease.ttl", "Worker lease duration: a worker missing heartbeats this long leaves the ring. Also the startup grace after a restart or fail-over.").
		Default(coordinator.DefaultLeaseTTL.String()).DurationVar(&cfg.leaseTTL)
	a.Flag("handoff.timeout", "Longest make-before-break handoff: the old owner stops after the new owner's first scrape or after this. 0: twice the target's scrape interval.").
		Default("0s").DurationVar(&cfg.handoffTimeout)
	a.Flag("replication-factor", "Owners per target (spread over zones).").
		Default("1").IntVar(&cfg.replicationFactor)
	a.Flag("cluster.label", "Name of the cluster label workers add to every series as an external label.").
		Default(relabel.DefaultClusterLabel).StringVar(&cfg.cluster.Label)
	a.Flag("cluster.name", "Value of the cluster label. Empty: no cluster label.").
		Default("").StringVar(&cfg.cluster.Name)
	a.Flag("ownership.key", "What places a target on the ring: 'labels' (its identity after relabeling) or 'address' (its discovered __address__, so every job's target on one address shares an owner).").
		Default(relabel.OwnershipKeyLabels).EnumVar(&cfg.ownershipKey, relabel.OwnershipKeyLabels, relabel.OwnershipKeyAddress)

	a.Flag("pod-enrichment.enabled", "Enrich targets whose address host is a pod IP with the pod's __meta_pod_* labels, from a Kubernetes pod list/watch.").
		Default("false").BoolVar(&cfg.podEnrichment)
	a.Flag("pod-enrichment.kubeconfig", "Kubeconfig for the pod index. Empty: --pod-enrichment.api-server, else in-cluster.").
		Default("").StringVar(&cfg.podKubeconfig)
	a.Flag("pod-enrichment.api-server", "Kubernetes API server URL for the pod index (no credentials; with a kubeconfig, overrides its server).").
		Default("").StringVar(&cfg.podAPIServer)
	a.Flag("pod-enrichment.namespace", "Only index pods of this namespace. Empty: all.").
		Default("").StringVar(&cfg.podNamespace)
	a.Flag("pod-enrichment.label-selector", "Only index pods matching this label selector.").
		Default("").StringVar(&cfg.podLabelSelector)
	a.Flag("pod-enrichment.include-host-network", "Index host-network pods too (they share their node's IP).").
		Default("false").BoolVar(&cfg.podIncludeHostNet)
	a.Flag("pod-enrichment.target-labels", "Besides __meta_pod_*, add the plain target labels named by --pod-enrichment.label.*.").
		Default("true").BoolVar(&cfg.podTargetLabels)
	a.Flag("pod-enrichment.label.pod", "Target label for the pod name (empty: none).").
		Default(relabel.DefaultTargetLabels.Pod).StringVar(&cfg.podLabelPod)
	a.Flag("pod-enrichment.label.namespace", "Target label for the pod namespace (empty: none).").
		Default(relabel.DefaultTargetLabels.Namespace).StringVar(&cfg.podLabelNamespace)
	a.Flag("pod-enrichment.label.node", "Target label for the pod's node (empty: none).").
		Default(relabel.DefaultTargetLabels.Node).StringVar(&cfg.podLabelNode)
	a.Flag("pod-enrichment.label.pod-ip", "Target label for the pod IP (empty: none).").
		Default(relabel.DefaultTargetLabels.PodIP).StringVar(&cfg.podLabelPodIP)

	a.Flag("leader-election.enabled", "Run as one of several replicas: only the holder of a Kubernetes Lease is ready and serves workers.").
		Default("false").BoolVar(&cfg.leaderElection)
	a.Flag("leader-election.kubeconfig", "Kubeconfig for the Lease. Empty: --leader-election.api-server, else in-cluster.").
		Default("").StringVar(&cfg.leaderKubeconfig)
	a.Flag("leader-election.api-server", "Kubernetes API server URL for the Lease (no credentials).").
		Default("").StringVar(&cfg.leaderAPIServer)
	a.Flag("leader-election.namespace", "Namespace of the Lease (default: $POD_NAMESPACE).").
		Default(os.Getenv("POD_NAMESPACE")).StringVar(&cfg.leaderNamespace)
	a.Flag("leader-election.lease-name", "Name of the Lease.").
		Default(defaultLeaseName).StringVar(&cfg.leaderLeaseName)
	hostname, _ := os.Hostname()
	a.Flag("leader-election.identity", "This replica's identity in the Lease (default: $HOSTNAME, the pod name).").
		Default(envOr("HOSTNAME", hostname)).StringVar(&cfg.leaderIdentity)
	a.Flag("leader-election.lease-duration", "How long a leader's Lease lasts without renewal before another replica may take it.").
		Default(leader.DefaultLeaseDuration.String()).DurationVar(&cfg.leaderLeaseDuration)
	a.Flag("leader-election.renew-deadline", "How long the leader retries renewing before it steps down.").
		Default(leader.DefaultRenewDeadline.String()).DurationVar(&cfg.leaderRenewDeadline)
	a.Flag("leader-election.retry-period", "Interval between Lease acquisition and renewal attempts.").
		Default(leader.DefaultRetryPeriod.String()).DurationVar(&cfg.leaderRetryPeriod)

	a.Flag("discovery.update-interval", "How often discovery's target updates are batched and applied (discovery.Manager's updatert; Prometheus uses 5s).").
		Hidden().Default("5s").DurationVar(&cfg.sdUpdateInterval)

	cfg.log = promslog.Config{}
	promslogflag.AddFlags(a, &cfg.log)
	return a
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// targetLabels returns the pipeline's pod target label names.
func (c *flagConfig) targetLabels() *relabel.TargetLabels {
	if !c.podTargetLabels {
		return &relabel.TargetLabels{}
	}
	return &relabel.TargetLabels{Pod: c.podLabelPod, Namespace: c.podLabelNamespace, Node: c.podLabelNode, PodIP: c.podLabelPodIP}
}
