// Command ajcompat drives the real choria asyncjobs Go module (v0.1.2 or v0.3.0, see build.sh) so that Jetbridge's tests can
// prove compatibility with it: every subcommand is a thin wrapper around asyncjobs' own client, processor, task
// and event code, printing JSON on stdout for the Python tests in tests/asyncjobs/.
//
//	ajcompat new-queue   --queue Q [--tries N] [--run-time D] [--concurrent N]   create a queue the asyncjobs way
//	ajcompat queue-info  --queue Q                                               a queue's settings as asyncjobs sees them
//	ajcompat enqueue     --queue Q --type T [--payload JSON] [--tries N] [--deadline D [--deadline-zone MIN]] [--depends IDS [--load]] [--sign SEEDHEX]
//	ajcompat get         ID                                                      the task as asyncjobs loads it
//	ajcompat retry       --queue Q ID                                            asyncjobs' RetryTaskByID, then the task
//	ajcompat worker      --queue Q --type T --mode ok|flaky|fail|terminate|remote [--count N]
//	ajcompat rr-handler  --type T --mode ok|flaky|fail|terminate [--count N]     a request-reply handler (AJ-* headers)
//	ajcompat watch-events [--task ID] [--until STATES] [--count N]               events parsed by asyncjobs.ParseEventJSON
//	ajcompat worker      ... [--verify PUBHEX [--signatures-optional]]           (v0.3.0) load only signed tasks
//	ajcompat verify      --pub PUBHEX [--optional] ID...                         check stored tasks' ed25519 signatures
//	ajcompat sign-message ID                                                     (v0.1.2 build) the bytes a signature covers
//	ajcompat version                                                             {"asyncjobs": "<version linked>"}
//
// One source builds against either asyncjobs release (see build.sh): go.mod pins v0.1.2, go.v030.mod with the
// build tag ajv030 pins v0.3.0. Files named *_v012.go / *_v030.go hold what differs.
//
// Every subcommand takes --server (default $NATS_URL, else nats://127.0.0.1:4222). Long-running subcommands print
// a line "ready" once subscribed, then one JSON object per line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"sync"
	"syscall"
	"time"

	aj "github.com/choria-io/asyncjobs"
	"github.com/nats-io/nats.go"
)

type command struct {
	run   func(args []string) error
	usage string
}

var commands = map[string]command{
	"new-queue":    {newQueue, "create a queue with asyncjobs' defaults and print it"},
	"queue-info":   {queueInfo, "print a queue's settings as asyncjobs reads them"},
	"enqueue":      {enqueue, "enqueue a task with the asyncjobs client and print its id"},
	"get":          {get, "load a task with the asyncjobs client and print it as JSON"},
	"retry":        {retry, "retry a task with asyncjobs' RetryTaskByID"},
	"worker":       {worker, "process tasks with an asyncjobs processor until N are done"},
	"rr-handler":   {rrHandler, "serve asyncjobs request-reply callouts"},
	"watch-events": {watchEvents, "print lifecycle events parsed by asyncjobs"},
	"verify":       {verify, "verify a stored task's ed25519 signature"},
	"version":      {version, "print the asyncjobs version this build links"},
}

// version reports which asyncjobs module the binary links, so the tests can prove which release they ran against.
func version(args []string) error {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Errorf("no build information in this binary")
	}
	for _, dep := range info.Deps {
		if dep.Path == "github.com/choria-io/asyncjobs" {
			emit(map[string]string{"asyncjobs": dep.Version, "go": info.GoVersion})
			return nil
		}
	}
	return fmt.Errorf("asyncjobs is not linked")
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]].run == nil {
		fmt.Fprintln(os.Stderr, "usage: ajcompat COMMAND [flags]\n\ncommands:")
		names := make([]string, 0, len(commands))
		for name := range commands {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fmt.Fprintf(os.Stderr, "  %-13s %s\n", name, commands[name].usage)
		}
		os.Exit(2)
	}
	if err := commands[os.Args[1]].run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "ajcompat %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// flags is a FlagSet with the --server flag every subcommand shares.
type flags struct {
	*flag.FlagSet
	server *string
}

func newFlags(name string) flags {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	return flags{fs, fs.String("server", url, "NATS server URL")}
}

// connect dials NATS the way asyncjobs requires: NatsConn() refuses connections without old-style requests.
func (f flags) connect() (*nats.Conn, error) {
	return nats.Connect(*f.server, nats.UseOldRequestStyle(), nats.Name("ajcompat"))
}

// client makes an asyncjobs client on its own connection.
func (f flags) client(opts ...aj.ClientOpt) (*aj.Client, *nats.Conn, error) {
	nc, err := f.connect()
	if err != nil {
		return nil, nil, err
	}
	opts = append([]aj.ClientOpt{aj.NatsConn(nc), aj.CustomLogger(stderrLogger{})}, opts...)
	client, err := aj.NewClient(opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return client, nc, nil
}

// out prints one JSON value per line; safe for concurrent handlers.
var out = struct {
	sync.Mutex
	*json.Encoder
}{Encoder: json.NewEncoder(os.Stdout)}

func emit(v any) {
	out.Lock()
	defer out.Unlock()
	if err := out.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "ajcompat: cannot print: %v\n", err)
	}
}

func ready() {
	out.Lock()
	defer out.Unlock()
	fmt.Println("ready")
}

// signalContext is cancelled on SIGTERM or SIGINT, and after timeout when it is positive.
func signalContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	if timeout <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, func() { cancel(); stop() }
}

// stderrLogger sends asyncjobs' log lines to stderr, keeping stdout for results.
type stderrLogger struct{}

func (stderrLogger) Debugf(string, ...any) {}
func (stderrLogger) Infof(format string, v ...any) {
	fmt.Fprintf(os.Stderr, "info: "+format+"\n", v...)
}
func (stderrLogger) Warnf(format string, v ...any) {
	fmt.Fprintf(os.Stderr, "warn: "+format+"\n", v...)
}
func (stderrLogger) Errorf(format string, v ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", v...)
}
