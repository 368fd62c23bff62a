package rpc

import (
	"fmt"
	"strconv"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
)

// AddFlags registers the server's flags on app in Prometheus's style, each
// named <prefix>.<name> (prefix "grpc": --grpc.listen-address, ...), with
// the defaults of DefaultServerOptions. The values land in o when app
// parses.
func (o *ServerOptions) AddFlags(app *kingpin.Application, prefix string) {
	d := DefaultServerOptions()
	f := func(name, help string) *kingpin.FlagClause { return app.Flag(prefix+"."+name, help) }
	f("listen-address", "Address to serve gRPC (WorkerService, AdminService, grpc.health.v1) on.").
		Default(d.ListenAddress).StringVar(&o.ListenAddress)
	f("auth-token-file", "File holding the bearer token every gRPC call but health and reflection must carry (\"authorization: Bearer <token>\"); re-read when it changes. Empty: no token needed.").
		Default("").StringVar(&o.AuthTokenFile)
	f("admin-token-file", "File holding the token for AdminService calls, so that workers hold no admin rights. Empty: AdminService takes the --"+prefix+".auth-token-file token.").
		Default("").StringVar(&o.AdminTokenFile)
	f("tls-cert-file", "Server certificate (PEM) for gRPC TLS; reloaded when it changes. Empty: plaintext.").
		Default("").StringVar(&o.TLSCertFile)
	f("tls-key-file", "Key (PEM) of --"+prefix+".tls-cert-file.").
		Default("").StringVar(&o.TLSKeyFile)
	f("tls-client-ca-file", "CA bundle (PEM) for client certificates: when set, clients must present one it signed (mutual TLS).").
		Default("").StringVar(&o.TLSClientCAFile)
	f("max-recv-msg-size", "Largest gRPC message the server accepts (e.g. 16MiB).").
		Default(bytesString(d.MaxRecvMsgSize)).SetValue(&bytesValue{&o.MaxRecvMsgSize})
	f("max-send-msg-size", "Largest gRPC message the server sends (e.g. 16MiB).").
		Default(bytesString(d.MaxSendMsgSize)).SetValue(&bytesValue{&o.MaxSendMsgSize})
	f("graceful-stop-timeout", "On shutdown, how long open gRPC calls and streams may take to finish before connections are closed.").
		Default(d.GracefulStopTimeout.String()).DurationVar(&o.GracefulStopTimeout)
	f("keepalive.min-time", "Clients pinging more often than this are disconnected (keepalive enforcement).").
		Default(d.KeepaliveMinTime.String()).DurationVar(&o.KeepaliveMinTime)
	f("keepalive.time", "The server pings a connection idle for this long...").
		Default(d.KeepaliveTime.String()).DurationVar(&o.KeepaliveTime)
	f("keepalive.timeout", "...and closes it when the ping is not answered within this.").
		Default(d.KeepaliveTimeout.String()).DurationVar(&o.KeepaliveTimeout)
}

// AddFlags registers the client's flags on app in Prometheus's style, each
// named <prefix>.<name> (prefix "coordinator": --coordinator.address,
// --coordinator.auth-token-file, --coordinator.tls, --coordinator.tls-ca-file,
// --coordinator.tls-cert-file, --coordinator.tls-key-file,
// --coordinator.tls-server-name, --coordinator.insecure-token). The values
// land in o when app parses.
func (o *ClientOptions) AddFlags(app *kingpin.Application, prefix string) {
	f := func(name, help string) *kingpin.FlagClause { return app.Flag(prefix+"."+name, help) }
	f("address", "gRPC target of the coordinator (host:port, or any gRPC target such as dns:///name:port).").
		Default(DefaultCoordinatorAddress).StringVar(&o.Address)
	f("auth-token-file", "File holding the bearer token to send; re-read when it changes. Sent in plaintext only to a loopback address unless --"+prefix+".insecure-token.").
		Default("").StringVar(&o.AuthTokenFile)
	f("tls", "Use TLS (implied by any other --"+prefix+".tls-* flag); the system roots verify the server unless --"+prefix+".tls-ca-file is set.").
		Default("false").BoolVar(&o.TLS)
	f("tls-ca-file", "CA bundle (PEM) to verify the coordinator's certificate with.").
		Default("").StringVar(&o.TLSCAFile)
	f("tls-cert-file", "Client certificate (PEM) for mutual TLS; reloaded when it changes.").
		Default("").StringVar(&o.TLSCertFile)
	f("tls-key-file", "Key (PEM) of --"+prefix+".tls-cert-file.").
		Default("").StringVar(&o.TLSKeyFile)
	f("tls-server-name", "Name to verify the coordinator's certificate against, when it differs from the address's host.").
		Default("").StringVar(&o.TLSServerName)
	f("insecure-token", "Allow sending the token over plaintext to a non-loopback address (only where the network underneath is encrypted).").
		Default("false").BoolVar(&o.InsecureToken)
}

// bytesValue is a kingpin value for a size in bytes, written like 16MiB.
type bytesValue struct{ p *int }

func (b *bytesValue) Set(s string) error {
	v, err := units.ParseBase2Bytes(s)
	if err != nil {
		return fmt.Errorf("size %q: %w", s, err)
	}
	if v <= 0 || int64(v) > int64(^uint32(0)>>1) {
		return fmt.Errorf("size %q: out of range (1B to 2GiB)", s)
	}
	*b.p = int(v)
	return nil
}

func (b *bytesValue) String() string {
	if b.p == nil {
		return "0"
	}
	return bytesString(*b.p)
}

func bytesString(n int) string {
	if n%(1<<20) == 0 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return units.Base2Bytes(n).String()
}
