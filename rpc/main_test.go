package rpc

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// Server, Client and connection must stop its goroutines on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
