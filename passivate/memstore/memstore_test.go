package memstore_test

import (
	"testing"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/memstore"
	"github.com/containerd-lite/containerd-lite/passivate/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(testing.TB) (passivate.Store, string) { return memstore.New(), "" },
	})
}
