package remotewrite

import (
	"fmt"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/prometheus/config"
)

// FlagRegistrar is where RegisterFlags adds its flags: a
// *kingpin.Application or a *kingpin.CmdClause.
type FlagRegistrar interface {
	Flag(name, help string) *kingpin.FlagClause
}

// Flags are the local remote-write flags of a binary. When --remote-write.url
// is given, the endpoints they describe replace the config's remote_write
// (the coordinator's or the config file's).
type Flags struct {
	URLs         []string
	Receiver     string
	Tenant       string
	TenantHeader string
}

// RegisterFlags adds --remote-write.url (repeatable), --remote-write.receiver,
// --remote-write.tenant and --remote-write.tenant-header to a.
func RegisterFlags(a FlagRegistrar) *Flags {
	f := &Flags{}
	names := make([]string, 0, 3)
	for _, r := range Receivers() {
		names = append(names, string(r))
	}
	a.Flag("remote-write.url", "Remote-write endpoint URL; repeat for several. When given, these endpoints replace the config's remote_write. A URL without a path gets the receiver's write path.").
		StringsVar(&f.URLs)
	a.Flag("remote-write.receiver", "Receiver preset of every --remote-write.url: victoriametrics (/api/v1/write, remote-write 1.0), thanos-receive (/api/v1/receive, 1.0, tenant header), prometheus (/api/v1/write, remote-write 2.0).").
		Default(string(VictoriaMetrics)).EnumVar(&f.Receiver, names...)
	a.Flag("remote-write.tenant", "Tenant sent to thanos-receive in --remote-write.tenant-header.").
		StringVar(&f.Tenant)
	a.Flag("remote-write.tenant-header", "Header carrying --remote-write.tenant.").
		Default(DefaultTenantHeader).StringVar(&f.TenantHeader)
	return f
}

// Endpoints returns the endpoints the flags describe; none without
// --remote-write.url.
func (f *Flags) Endpoints() ([]Endpoint, error) {
	if len(f.URLs) == 0 {
		if f.Tenant != "" {
			return nil, fmt.Errorf("--remote-write.tenant=%q without --remote-write.url", f.Tenant)
		}
		return nil, nil
	}
	r, err := ParseReceiver(f.Receiver)
	if err != nil {
		return nil, fmt.Errorf("--remote-write.receiver: %w", err)
	}
	eps := make([]Endpoint, 0, len(f.URLs))
	for _, u := range f.URLs {
		eps = append(eps, Endpoint{URL: u, Receiver: r, Tenant: f.Tenant, TenantHeader: f.TenantHeader})
	}
	return eps, nil
}

// Apply makes the flags' endpoints cfg's remote_write when --remote-write.url
// is given, then applies ApplyQueueDefaults. The flags are checked even when
// they replace nothing.
func (f *Flags) Apply(cfg *config.Config) error {
	eps, err := f.Endpoints()
	if err != nil {
		return err
	}
	if len(eps) > 0 {
		rws := make([]*config.RemoteWriteConfig, 0, len(eps))
		for _, ep := range eps {
			rw, err := ep.RemoteWriteConfig()
			if err != nil {
				return fmt.Errorf("--remote-write.url: %w", err)
			}
			rws = append(rws, rw)
		}
		cfg.RemoteWriteConfigs = rws
	}
	ApplyQueueDefaults(cfg)
	return nil
}
