// Package cluster starts and abuses real containerd-lite node processes:
// start, SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restart on the same address.
// It also has a TCP proxy that cuts or partitions a link (Proxy), to take
// a database away from nodes without touching the server. The end-to-end
// tests and the torture command use it.
package cluster
