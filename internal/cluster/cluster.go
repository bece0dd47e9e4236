package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node is one `containerd-lite serve` process.
type Node struct {
	bin  string
	args []string // serve flags after --listen

	mu     sync.Mutex
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	err    error // the process's exit status once exited
	log    *logBuffer
}

var servingRE = regexp.MustCompile(`msg=serving addr=(\S+)`)

// Start runs `bin serve --listen listen args...` and waits until the node
// serves. listen "" means 127.0.0.1:0 (a free port).
func Start(ctx context.Context, bin, listen string, args ...string) (*Node, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	n := &Node{bin: bin, args: args, log: &logBuffer{}}
	return n, n.start(ctx, listen)
}

func (n *Node) start(ctx context.Context, listen string) error {
	cmd := exec.Command(n.bin, append([]string{"serve", "--listen", listen}, n.args...)...)
	// The node dies with the process that started it (a killed torture
	// run or test must not leave nodes behind).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = n.log
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			n.log.WriteString(line + "\n")
			if m := servingRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(exited)
	}()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()

	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	select {
	case addr := <-ready:
		n.mu.Lock()
		n.addr = addr
		n.mu.Unlock()
		return nil
	case <-exited:
		return fmt.Errorf("node exited before serving: %v\n%s", n.exitErr(), n.Logs())
	case <-timeout.C:
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("node did not start serving in time\n%s", n.Logs())
}

func (n *Node) exitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// Addr returns the node's RPC address.
func (n *Node) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

// PID returns the current process id.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// Logs returns what the node wrote so far, across restarts.
func (n *Node) Logs() string { return n.log.String() }

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	p := n.cmd.Process
	n.mu.Unlock()
	return p.Signal(sig)
}

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	ch := n.exited
	n.mu.Unlock()
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (n *Node) Kill() error {
	if !n.Running() {
		return nil
	}
	_ = n.signal(syscall.SIGCONT) // a stopped process dies only once continued
	if err := n.signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return n.wait(10 * time.Second)
}

// Stop freezes the process (SIGSTOP); Cont resumes it.
func (n *Node) Stop() error { return n.signal(syscall.SIGSTOP) }

// Cont resumes a stopped process.
func (n *Node) Cont() error { return n.signal(syscall.SIGCONT) }

// Term sends SIGTERM and waits up to timeout for a clean exit, returning
// the exit status.
func (n *Node) Term(timeout time.Duration) error {
	if err := n.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := n.wait(timeout); err != nil {
		return err
	}
	return n.exitErr()
}

func (n *Node) wait(timeout time.Duration) error {
	n.mu.Lock()
	ch := n.exited
	n.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("node %s did not exit within %v", n.Addr(), timeout)
	}
}

// Restart starts the node again on its previous address, with a new
// incarnation. The old process must be gone.
func (n *Node) Restart(ctx context.Context) error {
	if n.Running() {
		return errors.New("cluster: restart of a running node")
	}
	var err error
	for range 50 { // the port can linger briefly after a kill
		if err = n.start(ctx, n.Addr()); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Build compiles the containerd-lite binary into dir and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "containerd-lite")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/containerd-lite/containerd-lite/cmd/containerd-lite")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// logBuffer is a goroutine-safe, bounded log of a node's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const maxLog = 4 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > maxLog {
		tail := b.buf.Bytes()[b.buf.Len()-maxLog/2:]
		b.buf = *bytes.NewBuffer(append([]byte("...\n"), tail...))
	}
	return b.buf.Write(p)
}

func (b *logBuffer) WriteString(s string) { _, _ = b.Write([]byte(s)) }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
