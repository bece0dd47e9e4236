package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd-lite/containerd-lite/container"
	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/registry"
	"github.com/containerd-lite/containerd-lite/rpc"
)

// cartShape is the content every benchmark cart holds.
type cartShape struct {
	items  map[string]int
	skus   []string // sorted as created
	state  []byte   // the stored encoding of a Cart holding items
	args   []byte   // CBOR of the first cart.Item a call sends (for the echo)
	result []byte   // CBOR of the cart.Line an Add returns (for the echo)
}

// skuLen is the length of a SKU: 24 bytes, so that a 1 KiB cart holds
// about three dozen SKUs.
const skuLen = 24

// sku returns the i-th SKU: a number and hex digits of its hash, as
// little compressible as real SKUs (PostgreSQL compresses rows over 2 KB).
func sku(i int) string {
	h := fnv.New64a()
	fmt.Fprint(h, i)
	s := fmt.Sprintf("sku-%05d-%016x", i, h.Sum64())
	return s[:skuLen]
}

// seedQty is every SKU's quantity in a fresh cart. Its CBOR encoding takes
// 3 bytes up to 65535, so the state's size stays constant while each call
// adds 1 to one SKU.
const seedQty = 1000

// newCartShape returns a cart whose encoded state has at least size bytes
// (and fewer than size plus one SKU's entry).
func newCartShape(size int) (*cartShape, error) {
	s := &cartShape{items: map[string]int{}}
	for {
		b, err := registry.Marshal(&cart.Cart{Items: s.items})
		if err != nil {
			return nil, err
		}
		if len(b) >= size {
			s.state = b
			break
		}
		k := sku(len(s.skus))
		s.items[k] = seedQty
		s.skus = append(s.skus, k)
	}
	var err error
	if s.args, err = registry.Marshal(cart.Item{SKU: s.skus[0], Qty: 1}); err != nil {
		return nil, err
	}
	if s.result, err = registry.Marshal(cart.Line{SKU: s.skus[0], Qty: seedQty + 1}); err != nil {
		return nil, err
	}
	return s, nil
}

// seed stores a cart of the shape under each id and releases it, as a
// passivated instance is left: no owner, the state and version in the
// store. It uses par goroutines.
func seed(ctx context.Context, st passivate.Store, stateVersion int, ids []string, state []byte, par int) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	node := passivate.Node{Incarnation: "bench-seed-" + hex.EncodeToString(b[:])}
	if err := st.Register(ctx, node, time.Minute); err != nil {
		return fmt.Errorf("bench: seed: %w", err)
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range min(par, len(ids)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				if err := seedOne(ctx, st, node.Incarnation, ids[i], stateVersion, state); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := st.Deregister(ctx, node.Incarnation); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: seed: %w", err)
	}
	return ctx.Err()
}

func seedOne(ctx context.Context, st passivate.Store, inc, id string, stateVersion int, state []byte) error {
	key := passivate.Key{Component: cart.Type.Name(), ID: id}
	act, err := st.Activate(ctx, key, inc)
	if err != nil {
		return err
	}
	w := &passivate.Write{Key: key, Owner: act.Owner, Version: act.Version, State: state, StateVersion: stateVersion}
	if err := st.Save(ctx, w); err != nil {
		return err
	}
	return st.Release(ctx, key, act.Owner)
}

// cartNode is one in-process containerd-lite node and a client of it.
type cartNode struct {
	store  passivate.Store
	node   *container.Container
	srv    *rpc.Server
	served chan error
	client *rpc.Client
}

// startCartNode serves reg over st on a loopback port. It takes st over:
// close closes it.
func startCartNode(ctx context.Context, reg *registry.Registry, st passivate.Store) (*cartNode, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, err
	}
	node, err := container.New(container.Config{Registry: reg, Store: st, Addr: ln.Addr().String()})
	if err == nil {
		err = node.Start(ctx)
	}
	if err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	n := &cartNode{store: st, node: node, served: make(chan error, 1)}
	n.srv = rpc.NewServer(node, &rpc.ServerConfig{Incarnation: node.Incarnation(), Addr: node.Addr()})
	go func() { n.served <- n.srv.Serve(ln) }()
	n.client, err = rpc.NewClient(rpc.ClientConfig{Nodes: []string{node.Addr()}})
	if err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// close stops the client, drains the node, stops the server and closes the
// store, waiting for every goroutine of theirs.
func (n *cartNode) close() error {
	var errs []error
	if n.client != nil {
		errs = append(errs, n.client.Close())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs = append(errs, n.node.Shutdown(ctx), n.srv.Shutdown(ctx))
	if err := <-n.served; !errors.Is(err, rpc.ErrServerClosed) {
		errs = append(errs, err)
	}
	errs = append(errs, n.store.Close())
	return errors.Join(errs...)
}

// cartCalls are the calls of a cart workload: each caller adds 1 to the
// SKUs of its own cart in turn.
type cartCalls struct {
	client *rpc.Client
	skus   []string
	ids    []string
	k      []int // per caller: calls made
}

func newCartCalls(client *rpc.Client, shape *cartShape, ids []string) *cartCalls {
	return &cartCalls{client: client, skus: shape.skus, ids: ids, k: make([]int, len(ids))}
}

func (cc *cartCalls) call(ctx context.Context, w int) error {
	sku := cc.skus[cc.k[w]%len(cc.skus)]
	cc.k[w]++
	line, err := cart.Add.Call(ctx, cc.client, cc.ids[w], cart.Item{SKU: sku, Qty: 1})
	if err != nil {
		return err
	}
	if line.SKU != sku || line.Qty <= seedQty {
		return fmt.Errorf("cart %s: %s has quantity %d after an Add", cc.ids[w], sku, line.Qty)
	}
	return nil
}

// reactivations hands out passivated instances, each to one call.
type reactivations struct {
	client *rpc.Client
	sku    string
	ids    []string
	next   atomic.Int64
}

func (r *reactivations) call(ctx context.Context, _ int) error {
	i := int(r.next.Add(1)) - 1
	if i >= len(r.ids) {
		return errExhausted
	}
	_, err := cart.Add.Call(ctx, r.client, r.ids[i], cart.Item{SKU: r.sku, Qty: 1})
	return err
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
