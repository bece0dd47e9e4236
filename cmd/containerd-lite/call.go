package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/containerd-lite/containerd-lite/registry"
	"github.com/containerd-lite/containerd-lite/rpc"
)

// defaultNodes is where call and nodes look without --nodes:
// $CONTAINERD_LITE_NODES, else the default serve address.
func defaultNodes() string {
	if n := os.Getenv("CONTAINERD_LITE_NODES"); n != "" {
		return n
	}
	return "127.0.0.1:7401"
}

func (m *Main) client(nodes, token string, tlsf *tlsFlags) (*rpc.Client, error) {
	tc, err := tlsf.clientConfig()
	if err != nil {
		return nil, err
	}
	c, err := rpc.NewClient(rpc.ClientConfig{Nodes: strings.Split(nodes, ","), Token: token, TLS: tc})
	if err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}

func (m *Main) call(ctx context.Context, args []string) error {
	fs := m.flags("call", "[--nodes ADDR,ADDR,...] COMPONENT ID METHOD [JSON-ARGS]")
	nodes := fs.String("nodes", defaultNodes(), "comma-separated node addresses, tried in turn (default $CONTAINERD_LITE_NODES or 127.0.0.1:7401)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long, retries included")
	token := fs.String("token", os.Getenv("CONTAINERD_LITE_TOKEN"), "shared secret of the nodes (default $CONTAINERD_LITE_TOKEN)")
	tlsf := clientTLSFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 3 || fs.NArg() > 4 {
		fs.Usage()
		return usagef("call needs COMPONENT ID METHOD [JSON-ARGS]")
	}
	call := &registry.Call{Component: fs.Arg(0), ID: fs.Arg(1), Method: fs.Arg(2)}
	if fs.NArg() == 4 {
		a, err := jsonToCBOR(fs.Arg(3))
		if err != nil {
			return registry.Errorf(registry.CodeBadRequest, "JSON-ARGS: %v", err)
		}
		call.Args = a
	}
	c, err := m.client(*nodes, *token, tlsf)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	reply, err := c.Invoke(ctx, call)
	if err != nil {
		return tlsf.hint(err)
	}
	out, err := cborToJSON(reply)
	if err != nil {
		return fmt.Errorf("reply is not representable as JSON: %w", err)
	}
	fmt.Fprintln(m.Stdout, string(out))
	return nil
}

func (m *Main) nodes(ctx context.Context, args []string) error {
	fs := m.flags("nodes", "[--nodes ADDR,ADDR,...]")
	nodes := fs.String("nodes", defaultNodes(), "comma-separated node addresses to ask (default $CONTAINERD_LITE_NODES or 127.0.0.1:7401)")
	token := fs.String("token", os.Getenv("CONTAINERD_LITE_TOKEN"), "shared secret of the nodes (default $CONTAINERD_LITE_TOKEN)")
	tlsf := clientTLSFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := m.client(*nodes, *token, tlsf)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	live, err := c.Nodes(ctx)
	if err != nil {
		return tlsf.hint(err)
	}
	for _, n := range live {
		fmt.Fprintln(m.Stdout, n)
	}
	return nil
}

// jsonToCBOR converts a JSON document to CBOR, keeping integers integers
// (so that they decode into Go int fields) and other numbers floats.
func jsonToCBOR(s string) ([]byte, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	v, err := numbers(v)
	if err != nil {
		return nil, err
	}
	return registry.Marshal(v)
}

func numbers(v any) (any, error) {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i, nil
		}
		if u, err := parseUint(t.String()); err == nil {
			return u, nil
		}
		f, err := t.Float64()
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %s out of range", t)
		}
		return f, nil
	case map[string]any:
		for k, e := range t {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			t[k] = n
		}
	case []any:
		for i, e := range t {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			t[i] = n
		}
	}
	return v, nil
}

func parseUint(s string) (uint64, error) {
	var u uint64
	_, err := fmt.Sscan(s, &u)
	if err != nil || fmt.Sprint(u) != s {
		return 0, fmt.Errorf("not a uint64")
	}
	return u, nil
}

var replyDec = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		MaxNestedLevels:  registry.MaxNestedLevels,
		MaxArrayElements: registry.MaxArrayElements,
		MaxMapPairs:      registry.MaxMapPairs,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// cborToJSON renders a CBOR reply as JSON: maps with non-string keys get
// their keys printed, byte strings become base64 (encoding/json's rule).
func cborToJSON(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return []byte("null"), nil
	}
	var v any
	if err := replyDec.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(jsonable(v)); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func jsonable(v any) any {
	switch t := v.(type) {
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		for i, e := range t {
			t[i] = jsonable(e)
		}
		return t
	case cbor.Tag:
		return jsonable(t.Content)
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return fmt.Sprint(t)
		}
	case float32:
		return jsonable(float64(t))
	}
	return v
}
