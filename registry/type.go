package registry

import (
	"context"
	"errors"
	"fmt"
	"reflect"
)

// Type declares a component type whose state is S, a struct. Make one with
// NewType and declare its methods with NewMethod and NewMethod0, all at
// package level (they are immutable descriptors), then hand it to
// Registry.Register in the daemon.
type Type[S any] struct {
	name    string
	opts    Options
	methods []*Handler
	errs    []error
}

// NewType declares a component type named name with state S. Problems (a
// state field that cannot survive failover, a bad name) are reported by
// Registry.Register, so declarations can stay package-level values.
func NewType[S any](name string, opts Options) *Type[S] {
	t := &Type[S]{name: name, opts: opts}
	if t.opts.StateVersion == 0 {
		t.opts.StateVersion = 1
	}
	if !nameRE.MatchString(name) {
		t.errs = append(t.errs, fmt.Errorf("invalid component name %q: use letters, digits, '_', '.', '-' (at most 64)", name))
	}
	st := reflect.TypeFor[S]()
	switch {
	case st.Kind() != reflect.Struct:
		t.errs = append(t.errs, fmt.Errorf("state type %s is not a struct", st))
	default:
		if err := checkType(st, true); err != nil {
			t.errs = append(t.errs, fmt.Errorf("state %s", err))
		}
	}
	if t.opts.StateVersion < 0 {
		t.errs = append(t.errs, fmt.Errorf("negative StateVersion %d", t.opts.StateVersion))
	}
	if t.opts.MaxStateSize < 0 {
		t.errs = append(t.errs, fmt.Errorf("negative MaxStateSize %d", t.opts.MaxStateSize))
	}
	return t
}

// Name returns the component name.
func (t *Type[S]) Name() string { return t.name }

func (t *Type[S]) definition() (*Component, error) {
	if len(t.errs) > 0 {
		return nil, fmt.Errorf("registry: component %q: %w", t.name, errors.Join(t.errs...))
	}
	c := &Component{name: t.name, opts: t.opts, methods: make(map[string]*Handler, len(t.methods)), state: codecFor[S]()}
	for _, h := range t.methods {
		c.methods[h.name] = h
	}
	return c, nil
}

func (t *Type[S]) add(h *Handler, in, out reflect.Type) {
	if !nameRE.MatchString(h.name) {
		t.errs = append(t.errs, fmt.Errorf("invalid method name %q", h.name))
	}
	for _, m := range t.methods {
		if m.name == h.name {
			t.errs = append(t.errs, fmt.Errorf("method %q declared twice", h.name))
		}
	}
	for _, typ := range []reflect.Type{in, out} {
		if typ == nil {
			continue
		}
		if err := checkType(typ, false); err != nil {
			t.errs = append(t.errs, fmt.Errorf("method %q: %w", h.name, err))
		}
	}
	t.methods = append(t.methods, h)
}

// MethodOption tunes a method declaration.
type MethodOption func(*methodConfig)

type methodConfig struct{ removes bool }

// Removes marks a method that ends its instance (SFSB @Remove, a cart's
// checkout): after it succeeds, the instance's state is deleted in the same
// atomic write that records the call, and its Remover hook runs.
func Removes() MethodOption { return func(c *methodConfig) { c.removes = true } }

func methodConf(opts []MethodOption) methodConfig {
	var c methodConfig
	for _, o := range opts {
		o(&c)
	}
	return c
}

// Method is a typed descriptor of a method taking In and returning Out. It
// serves the node (through the registry) and the client (through Call).
type Method[In, Out any] struct {
	component, name string
}

// NewMethod declares fn, with the shape
// func (s *S) Name(ctx context.Context, in In) (Out, error), as a method of t
// callable remotely under name. Pass it as a method expression: (*S).Name.
func NewMethod[S, In, Out any](t *Type[S], name string, fn func(*S, context.Context, In) (Out, error), opts ...MethodOption) *Method[In, Out] {
	cfg := methodConf(opts)
	inType := reflect.TypeFor[In]()
	h := &Handler{
		component: t.name, name: name, removes: cfg.removes, takesArgs: true, argsType: inType.String(),
		decode: func(b []byte) (any, error) {
			if len(b) == 0 {
				return nil, Errorf(CodeBadRequest, "%s.%s needs an argument of type %s", t.name, name, inType)
			}
			var in In
			if err := argsDec.Unmarshal(b, &in); err != nil {
				return nil, Errorf(CodeBadRequest, "%s.%s: argument is not a valid %s: %v", t.name, name, inType, err)
			}
			return in, nil
		},
		invoke: func(ctx context.Context, state, args any) ([]byte, error) {
			out, err := fn(state.(*S), ctx, args.(In))
			if err != nil {
				return nil, err
			}
			return encodeReply(out)
		},
	}
	t.add(h, inType, reflect.TypeFor[Out]())
	return &Method[In, Out]{component: t.name, name: name}
}

// Component returns the name of the method's component.
func (m *Method[In, Out]) Component() string { return m.component }

// Name returns the method name.
func (m *Method[In, Out]) Name() string { return m.name }

// Call invokes the method on instance id through c (an *rpc.Client, or a
// *container.Container in process). Errors are *Error values.
func (m *Method[In, Out]) Call(ctx context.Context, c Caller, id string, in In) (Out, error) {
	var out Out
	args, err := wireEnc.Marshal(in)
	if err != nil {
		return out, Errorf(CodeBadRequest, "%s.%s: encode argument: %w", m.component, m.name, err)
	}
	return invokeTyped[Out](ctx, c, &Call{Component: m.component, ID: id, Method: m.name, Args: args})
}

// Method0 is a typed descriptor of a method that takes no argument.
type Method0[Out any] struct {
	component, name string
}

// NewMethod0 declares fn, with the shape
// func (s *S) Name(ctx context.Context) (Out, error), as a method of t that
// takes no argument.
func NewMethod0[S, Out any](t *Type[S], name string, fn func(*S, context.Context) (Out, error), opts ...MethodOption) *Method0[Out] {
	cfg := methodConf(opts)
	h := &Handler{
		component: t.name, name: name, removes: cfg.removes,
		decode: func(b []byte) (any, error) {
			if !emptyArgs(b) {
				return nil, Errorf(CodeBadRequest, "%s.%s takes no argument", t.name, name)
			}
			return nil, nil
		},
		invoke: func(ctx context.Context, state, _ any) ([]byte, error) {
			out, err := fn(state.(*S), ctx)
			if err != nil {
				return nil, err
			}
			return encodeReply(out)
		},
	}
	t.add(h, nil, reflect.TypeFor[Out]())
	return &Method0[Out]{component: t.name, name: name}
}

// Component returns the name of the method's component.
func (m *Method0[Out]) Component() string { return m.component }

// Name returns the method name.
func (m *Method0[Out]) Name() string { return m.name }

// Call invokes the method on instance id through c.
func (m *Method0[Out]) Call(ctx context.Context, c Caller, id string) (Out, error) {
	return invokeTyped[Out](ctx, c, &Call{Component: m.component, ID: id, Method: m.name})
}

func invokeTyped[Out any](ctx context.Context, c Caller, call *Call) (Out, error) {
	var out Out
	reply, err := c.Invoke(ctx, call)
	if err != nil {
		return out, err
	}
	if err := replyDec.Unmarshal(reply, &out); err != nil {
		return out, Errorf(CodeInternal, "%s.%s: decode reply: %w", call.Component, call.Method, err)
	}
	return out, nil
}

func encodeReply(out any) ([]byte, error) {
	b, err := wireEnc.Marshal(out)
	if err != nil {
		return nil, Errorf(CodeInternal, "encode reply: %w", err)
	}
	return b, nil
}

// emptyArgs accepts no bytes, CBOR null, undefined, or an empty map or array
// as "no argument" (what a shell user types as {} or nothing).
func emptyArgs(b []byte) bool {
	return len(b) == 0 || (len(b) == 1 && (b[0] == 0xf6 || b[0] == 0xf7 || b[0] == 0xa0 || b[0] == 0x80))
}

type stateCodec struct {
	new    func() any
	encode func(any) ([]byte, error)
	reset  func(cur any) any
}

func codecFor[S any]() stateCodec {
	st := reflect.TypeFor[S]()
	var persisted []int
	for i := range st.NumField() {
		if f := st.Field(i); !transient(f) && f.IsExported() {
			persisted = append(persisted, i)
		}
	}
	return stateCodec{
		new:    func() any { return new(S) },
		encode: func(s any) ([]byte, error) { return encMode.Marshal(s.(*S)) },
		// reset keeps every field of cur but the persisted ones, which it
		// zeroes, ready to decode the committed state into.
		reset: func(cur any) any {
			n := new(S)
			if c, ok := cur.(*S); ok && c != nil {
				*n = *c
			}
			v := reflect.ValueOf(n).Elem()
			for _, i := range persisted {
				v.Field(i).SetZero()
			}
			return n
		},
	}
}
