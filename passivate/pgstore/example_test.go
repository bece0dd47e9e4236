package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
)

// A node's life with the PostgreSQL store: migrate once, open, register,
// then claim, save and release instances. (Not run by go test: it needs a
// server.)
func Example() {
	ctx := context.Background()
	url := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

	// Usually `containerd-lite migrate --store URL`; safe to run from
	// several nodes at once.
	if _, err := pgstore.Migrate(ctx, url); err != nil {
		log.Fatal(err)
	}
	s, err := pgstore.Open(ctx, url, nil)
	if err != nil {
		log.Fatal(err) // errors.Is(err, pgstore.ErrNotMigrated) without the step above
	}
	defer s.Close()

	node := passivate.Node{Incarnation: "node-1-8f3a", Addr: "127.0.0.1:7401"}
	if err := s.Register(ctx, node, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	defer s.Deregister(ctx, node.Incarnation)

	key := passivate.Key{Component: "cart", ID: "alice"}
	a, err := s.Activate(ctx, key, node.Incarnation)
	var owned *passivate.OwnedError
	if errors.As(err, &owned) {
		fmt.Println("redirect to", owned.Addr)
		return
	} else if err != nil {
		log.Fatal(err)
	}

	err = s.Save(ctx, &passivate.Write{
		Key: key, Owner: a.Owner, Version: a.Version,
		State: []byte("new state"), StateVersion: 1,
	})
	if errors.Is(err, passivate.ErrFenced) {
		// Another node took the instance over: drop the activation.
		return
	} else if err != nil {
		log.Fatal(err)
	}
	if err := s.Release(ctx, key, a.Owner); err != nil {
		log.Fatal(err)
	}
}

// Following a PostgreSQL failover: list every host, and let pgx pick the
// one that accepts writes. search_path selects the schema of the tables.
func ExampleOpen() {
	url := "postgres://app:secret@pg-a:5432,pg-b:5432/containerd" +
		"?target_session_attrs=read-write&connect_timeout=3&search_path=containerd_lite"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, url, &pgstore.Options{Flushers: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
}
