package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/sqlitestore"
)

func Example() {
	dir, err := os.MkdirTemp("", "sqlitestore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A directory holds the store in containerd-lite.db.
	s, err := sqlitestore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	node := passivate.Node{Incarnation: "node-1", Addr: "127.0.0.1:7401"}
	if err := s.Register(ctx, node, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	key := passivate.Key{Component: "cart", ID: "alice"}
	a, err := s.Activate(ctx, key, node.Incarnation)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("activated %s: epoch %d, version %d, state %q\n", key, a.Owner.Epoch, a.Version, a.State)

	w := &passivate.Write{Key: key, Owner: a.Owner, Version: a.Version, State: []byte("2 apples"), StateVersion: 1}
	if err := s.Save(ctx, w); err != nil {
		log.Fatal(err)
	}
	// The same write again names a version that is no longer current.
	err = s.Save(ctx, w)
	fmt.Println("stale write fenced:", errors.Is(err, passivate.ErrFenced))

	// Another node finds the instance owned, and by whom.
	_, err = s.Activate(ctx, key, "node-2")
	var owned *passivate.OwnedError
	if errors.As(err, &owned) {
		fmt.Println("owned by", owned.Owner, "at", owned.Addr)
	}

	// Once released, it reactivates with the saved state.
	if err := s.Release(ctx, key, a.Owner); err != nil {
		log.Fatal(err)
	}
	b, err := s.Activate(ctx, key, "node-2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("reactivated: epoch %d, version %d, state %q\n", b.Owner.Epoch, b.Version, b.State)

	// Output:
	// activated cart/alice: epoch 1, version 0, state ""
	// stale write fenced: true
	// owned by node-1 at 127.0.0.1:7401
	// reactivated: epoch 2, version 1, state "2 apples"
}
