package registry

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"
)

// Options tune one component type.
type Options struct {
	// IdleTimeout passivates an instance that has had no call for this long.
	// Zero means the container's default; negative means never.
	IdleTimeout time.Duration
	// MaxStateSize bounds the encoded state in bytes; a call that would grow
	// the state past it fails with CodeTooLarge and leaves no trace. Zero
	// means the container's default.
	MaxStateSize int
	// StateVersion is the version of the state encoding this build writes.
	// Zero means 1. State written with an older version is passed through
	// Upgrade before it is decoded; state written by a newer version is
	// refused with CodeUnavailable, so that the client retries on a node
	// that runs the newer build (rolling upgrades).
	StateVersion int
	// Upgrade converts state written with version from (< StateVersion)
	// into the current encoding. Decode the old bytes into the old type with
	// Unmarshal, convert, and return Marshal of the new state.
	Upgrade func(from int, data []byte) ([]byte, error)
}

// Registry is the set of component types a node hosts. Create one with New,
// fill it with Register before serving, then share it read-only.
type Registry struct {
	mu    sync.RWMutex
	comps map[string]*Component
}

// New returns an empty registry.
func New() *Registry { return &Registry{comps: map[string]*Component{}} }

// Definition is a declared component type, made by NewType.
type Definition interface {
	definition() (*Component, error)
}

// Register adds component types. It fails, naming the problem, when a type
// is badly declared (its state could not survive failover, a method is
// declared twice) or its name is taken.
func (r *Registry) Register(defs ...Definition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range defs {
		c, err := d.definition()
		if err != nil {
			return err
		}
		if _, dup := r.comps[c.name]; dup {
			return fmt.Errorf("registry: component %q is already registered", c.name)
		}
		r.comps[c.name] = c
	}
	return nil
}

// Lookup returns the component registered under name.
func (r *Registry) Lookup(name string) (*Component, bool) {
	r.mu.RLock()
	c, ok := r.comps[name]
	r.mu.RUnlock()
	return c, ok
}

// Names returns the registered component names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.comps))
	for n := range r.comps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)

// Component is the runtime view of a registered component type, used by the
// container. Its methods are safe for concurrent use.
type Component struct {
	name    string
	opts    Options
	methods map[string]*Handler
	state   stateCodec
}

// Name returns the component's registered name.
func (c *Component) Name() string { return c.name }

// Options returns the component's options with StateVersion defaulted.
func (c *Component) Options() Options { return c.opts }

// Method returns the handler of the named method.
func (c *Component) Method(name string) (*Handler, bool) {
	h, ok := c.methods[name]
	return h, ok
}

// Methods returns the names of the component's methods, sorted.
func (c *Component) Methods() []string {
	names := make([]string, 0, len(c.methods))
	for n := range c.methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewState returns a fresh, zero state (a *S).
func (c *Component) NewState() any { return c.state.new() }

// EncodeState returns the deterministic encoding of state (a *S).
func (c *Component) EncodeState(state any) ([]byte, error) { return c.state.encode(state) }

// DecodeState decodes stored state written with the given state version,
// upgrading it first when it is older. Empty data yields a fresh state.
func (c *Component) DecodeState(data []byte, version int) (any, error) {
	if len(data) == 0 {
		return c.state.new(), nil
	}
	switch {
	case version > c.opts.StateVersion:
		return nil, Errorf(CodeUnavailable, "component %q: stored state has version %d, newer than this node's %d", c.name, version, c.opts.StateVersion)
	case version < c.opts.StateVersion:
		if c.opts.Upgrade == nil {
			return nil, Errorf(CodeInternal, "component %q: stored state has version %d and no Upgrade is declared to reach %d", c.name, version, c.opts.StateVersion)
		}
		up, err := c.opts.Upgrade(version, data)
		if err != nil {
			return nil, Errorf(CodeInternal, "component %q: upgrade state from version %d: %w", c.name, version, err)
		}
		data = up
	}
	s := c.state.new()
	if err := stateDec.Unmarshal(data, s); err != nil {
		return nil, Errorf(CodeInternal, "component %q: decode state: %w", c.name, err)
	}
	return s, nil
}

// Rollback returns the state as of its last committed encoding, keeping the
// transient fields of cur (open files, connections) so that a failed call
// does not cost the instance its resources.
func (c *Component) Rollback(cur any, committed []byte) (any, error) {
	s := c.state.reset(cur)
	if len(committed) == 0 {
		return s, nil
	}
	if err := stateDec.Unmarshal(committed, s); err != nil {
		return nil, Errorf(CodeInternal, "component %q: decode state: %w", c.name, err)
	}
	return s, nil
}

// Handler is the runtime view of one remotely callable method.
type Handler struct {
	component string
	name      string
	removes   bool
	takesArgs bool
	argsType  string
	decode    func(args []byte) (any, error)
	invoke    func(ctx context.Context, state, args any) ([]byte, error)
}

// Name returns the method name.
func (h *Handler) Name() string { return h.name }

// Removes reports whether a successful call ends the instance.
func (h *Handler) Removes() bool { return h.removes }

// DecodeArgs decodes and checks a call's CBOR arguments. Its errors are
// *Error with CodeBadRequest.
func (h *Handler) DecodeArgs(args []byte) (any, error) { return h.decode(args) }

// Invoke runs the method on state (a *S) with decoded args and returns the
// encoded reply. It does not recover panics: the container does.
func (h *Handler) Invoke(ctx context.Context, state, args any) ([]byte, error) {
	return h.invoke(ctx, state, args)
}
