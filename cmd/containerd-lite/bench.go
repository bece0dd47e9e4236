package main

import "context"

func (m *Main) bench(ctx context.Context, args []string) error {
	return usagef("bench: not built yet")
}
