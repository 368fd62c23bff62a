package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardscrape/shardscrape/internal/rpc"
	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Exit codes; see the help text.
const (
	exitOK       = 0
	exitServer   = 1
	exitUsage    = 2
	exitConnAuth = 3
)

const helpText = `Operate a shardscrape coordinator through its AdminService.

Targets are named by id (16 hex digits, with or without 0x, as "targets" and
"locate" print it) or as job/address: the job name and the discovered
__address__, split at the last "/" (node/10.0.0.1:9100). Pins and excludes
given by id apply to the target's job and address.

Output: -o table (default), -o wide (more columns), -o json (the response as
protobuf JSON, one document).

Exit codes: 0 success; 1 the coordinator answered with an error (not found,
failed precondition, invalid argument, ...); 2 usage error (bad flags or
arguments, caught before any call); 3 connection or authentication failure
(coordinator unreachable or not the leader, --timeout exceeded, TLS
handshake, bad or missing token, unreadable token or certificate file).`

// exitPanic carries kingpin's terminate code out of Parse (--help).
type exitPanic int

// cli is one invocation of shardctl.
type cli struct {
	stdout, stderr io.Writer
	now            func() time.Time

	client  rpc.ClientOptions
	timeout time.Duration
	output  string

	targets struct {
		job, worker, state, selector string
		unassigned, pinned, excluded bool
		limit, pageSize              uint32
	}
	locate, pin, unpin, exclude, include struct{ target string }
	pinWorker                            string
	excludeReason                        string
	drain, undrain                       struct{ worker string }
	pauseReason                          string
	preview                              struct {
		add, remove []string
		limit       uint32
	}
}

// run executes shardctl with args (without the program name) and returns
// its exit code.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, now: time.Now}
	return c.run(args)
}

func (c *cli) app() *kingpin.Application {
	app := kingpin.New("shardctl", helpText)
	app.UsageWriter(c.stdout)
	app.ErrorWriter(c.stderr)
	app.Terminate(func(code int) { panic(exitPanic(code)) })
	app.HelpFlag.Short('h')

	c.client.AddFlags(app, "coordinator")
	app.Flag("timeout", "Deadline for the whole command, all pages included.").Default("30s").DurationVar(&c.timeout)
	app.Flag("output", "Output format: table, wide or json.").Short('o').Default("table").EnumVar(&c.output, "table", "wide", "json")

	app.Command("workers", "List the workers: state, lease, generations, targets, series.")

	t := app.Command("targets", "List targets with their owners (all pages, or --limit).")
	t.Flag("job", "Only targets of this job.").StringVar(&c.targets.job)
	t.Flag("worker", "Only targets this worker holds.").StringVar(&c.targets.worker)
	t.Flag("state", "Only targets in this state on some owner: active, incoming or outgoing.").EnumVar(&c.targets.state, "active", "incoming", "outgoing")
	t.Flag("selector", `Series selector over the discovered labels, e.g. '{__address__=~"10\\..*"}'.`).StringVar(&c.targets.selector)
	t.Flag("unassigned", "Include unassigned and excluded targets.").BoolVar(&c.targets.unassigned)
	t.Flag("pinned", "Only pinned targets.").BoolVar(&c.targets.pinned)
	t.Flag("excluded", "Only excluded targets.").BoolVar(&c.targets.excluded)
	t.Flag("limit", "At most this many targets (0: all).").Default("0").Uint32Var(&c.targets.limit)
	t.Flag("page-size", "Targets per call (0: the coordinator's default).").Default("0").Uint32Var(&c.targets.pageSize)

	l := app.Command("locate", "Show a target's owners and why they own it.")
	l.Arg("target", "The target: "+targetSyntax+".").Required().StringVar(&c.locate.target)

	app.Command("ring", "Show the ring: members, weights, owned fractions, loads and bounds.")

	d := app.Command("drain", "Move every target off a worker (make before break) and keep it drained until undrain.")
	d.Arg("worker", "Worker id.").Required().StringVar(&c.drain.worker)
	u := app.Command("undrain", "Put a drained worker back on the ring.")
	u.Arg("worker", "Worker id.").Required().StringVar(&c.undrain.worker)

	p := app.Command("pin", "Assign a target to a worker regardless of the ring.")
	p.Arg("target", "The target: "+targetSyntax+".").Required().StringVar(&c.pin.target)
	p.Arg("worker", "Worker id.").Required().StringVar(&c.pinWorker)
	up := app.Command("unpin", "Give a pinned target back to the ring.")
	up.Arg("target", "The target: "+targetSyntax+".").Required().StringVar(&c.unpin.target)

	e := app.Command("exclude", "Stop a target from being scraped by anyone.")
	e.Arg("target", "The target: "+targetSyntax+".").Required().StringVar(&c.exclude.target)
	e.Flag("reason", "Why, for the record and the listing.").StringVar(&c.excludeReason)
	i := app.Command("include", "Scrape an excluded target again.")
	i.Arg("target", "The target: "+targetSyntax+".").Required().StringVar(&c.include.target)

	pa := app.Command("pause", "Freeze ownership: joins and load changes move nothing until resume (new targets and dead workers' targets still move).")
	pa.Flag("reason", "Why, shown by ring.").StringVar(&c.pauseReason)
	app.Command("resume", "Resume rebalancing; the ring catches up.")

	pr := app.Command("preview", "Show the moves a membership change would cause, without applying it. With no change: the moves resuming a paused ring would cause.")
	pr.Flag("add", "A hypothetical worker joining, id[:zone[:capacity]]; repeatable.").StringsVar(&c.preview.add)
	pr.Flag("remove", "A worker leaving (or drained, or expiring); repeatable.").StringsVar(&c.preview.remove)
	pr.Flag("limit", "At most this many moves listed (0: the coordinator's default); the counts cover all.").Default("0").Uint32Var(&c.preview.limit)
	return app
}

func (c *cli) run(args []string) (code int) {
	app := c.app()
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exitPanic)
			if !ok {
				panic(r)
			}
			code = int(e)
		}
	}()
	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(c.stderr, "shardctl: %v\n", err)
		fmt.Fprintln(c.stderr, "Try 'shardctl --help'.")
		return exitUsage
	}
	action, err := c.action(cmd)
	if err != nil {
		fmt.Fprintf(c.stderr, "shardctl %s: %v\n", cmd, err)
		return exitUsage
	}

	cc, err := rpc.Dial(c.client.Address, c.client)
	if err != nil {
		fmt.Fprintf(c.stderr, "shardctl: %v\n", err)
		return exitConnAuth
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := action(ctx, shardscrapev1.NewAdminServiceClient(cc)); err != nil {
		msg, code := c.explain(err)
		fmt.Fprintf(c.stderr, "shardctl %s: %s\n", cmd, msg)
		return code
	}
	return exitOK
}

// subjectError names what a failed call was about, for NotFound.
type subjectError struct {
	subject string
	err     error
}

func (e *subjectError) Error() string { return e.subject + ": " + e.err.Error() }
func (e *subjectError) Unwrap() error { return e.err }

func about(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &subjectError{subject: fmt.Sprintf(format, args...), err: err}
}

// explain turns a failed call into one line for the operator and the exit
// code.
func (c *cli) explain(err error) (string, int) {
	subject := ""
	var se *subjectError
	if errors.As(err, &se) {
		subject, err = se.subject, se.err
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not from the server: an output failure, say.
		return err.Error(), exitServer
	}
	msg := st.Message()
	addr := c.client.Address
	switch st.Code() {
	case codes.NotFound:
		if subject != "" {
			return fmt.Sprintf("%s not found (coordinator: %s)", subject, msg), exitServer
		}
		return "not found: " + msg, exitServer
	case codes.Unauthenticated:
		return fmt.Sprintf("authentication failed at %s: %s (check --coordinator.auth-token-file: AdminService may need the admin token)", addr, msg), exitConnAuth
	case codes.PermissionDenied:
		return fmt.Sprintf("permission denied at %s: %s", addr, msg), exitConnAuth
	case codes.Unavailable:
		return fmt.Sprintf("coordinator at %s unavailable (unreachable, TLS failure, or not the leader): %s", addr, msg), exitConnAuth
	case codes.DeadlineExceeded:
		return fmt.Sprintf("no answer from the coordinator at %s within --timeout=%s: %s", addr, c.timeout, msg), exitConnAuth
	case codes.Unimplemented:
		return fmt.Sprintf("the coordinator at %s does not implement this call: %s", addr, msg), exitServer
	case codes.FailedPrecondition, codes.InvalidArgument, codes.AlreadyExists, codes.OutOfRange:
		if subject != "" {
			return fmt.Sprintf("%s: %s", subject, msg), exitServer
		}
		return msg, exitServer
	default:
		return fmt.Sprintf("%s: %s", st.Code(), msg), exitServer
	}
}

// stateName prints an enum value without its prefix, in lower case:
// WORKER_STATE_ACTIVE → active.
func stateName(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}
