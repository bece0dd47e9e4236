package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/registry"
)

func main() {
	m := NewMain()
	err := m.Run(context.Background(), os.Args[1:])
	os.Exit(m.exitCode(err))
}

// Main is the program, with its streams and component registry as fields
// so that tests can run it in process.
type Main struct {
	Stdout, Stderr io.Writer
	// Registry holds the components `serve` hosts.
	Registry *registry.Registry
}

// NewMain returns the stock program: standard streams, cart component.
func NewMain() *Main {
	reg := registry.New()
	if err := cart.Register(reg); err != nil {
		panic(err) // a declaration bug in the stock component
	}
	return &Main{Stdout: os.Stdout, Stderr: os.Stderr, Registry: reg}
}

// usageError marks errors in the command line (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

const usage = `containerd-lite: stateful Go components over multiplexed RPC, persisted after every call.

Usage:
  containerd-lite serve   [--listen ADDR] [--store URL|PATH] [--migrate] [flags]
  containerd-lite call    [--nodes ADDR,ADDR,...] COMPONENT ID METHOD [JSON-ARGS]
  containerd-lite nodes   [--nodes ADDR,ADDR,...]
  containerd-lite migrate --store postgres://...
  containerd-lite torture [--store URL|PATH] [--duration 60s] [flags]
  containerd-lite bench   --store postgres://... [--duration 5s] [flags]

--store takes a postgres:// (or postgresql://) URL, or a filesystem path for
the embedded store; without it, serve uses the embedded store in
./containerd-lite-data. Run 'containerd-lite COMMAND -h' for a command's flags.
`

// Run runs the command named by args[0].
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return m.serve(ctx, rest)
	case "call":
		return m.call(ctx, rest)
	case "nodes":
		return m.nodes(ctx, rest)
	case "migrate":
		return m.migrate(ctx, rest)
	case "torture":
		return m.torture(ctx, rest)
	case "bench":
		return m.bench(ctx, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	fmt.Fprint(m.Stderr, usage)
	return usagef("unknown command %q", cmd)
}

// exitCode maps an error to the process exit code: 0 success, 2 usage, 1
// anything else. Errors are printed here, once.
func (m *Main) exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(m.Stderr, "containerd-lite:", err)
		return 2
	}
	var re *registry.Error
	if errors.As(err, &re) {
		fmt.Fprintf(m.Stderr, "%s: %s\n", re.Code, re.Message)
		return 1
	}
	fmt.Fprintln(m.Stderr, "containerd-lite:", err)
	return 1
}

// parseFlags parses a command's flags; a bad flag is a usage error (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return &usageError{err.Error()}
	}
	return err
}

func (m *Main) flags(name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, "Usage: containerd-lite %s %s\n\nFlags:\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}
