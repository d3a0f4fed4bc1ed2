// Command kfakebroker runs a one-broker Kafka-protocol cluster (franz-go's
// kfake) on 127.0.0.1 for tests that need a real broker in a process of
// its own, to stop and restart it. It prints "ready ADDR" once it
// listens and stops on SIGTERM, SIGINT or when its stdin closes (the test
// that started it is gone). With -data, topics, offsets and groups survive
// a restart.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 (required, so a restart keeps the address)")
	data := flag.String("data", "", "data directory (persistence across restarts)")
	partitions := flag.Int("partitions", 3, "partitions of auto-created topics")
	flag.Parse()
	if *port <= 0 {
		fmt.Fprintln(os.Stderr, "kfakebroker: -port is required")
		os.Exit(2)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(*port), kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions)}
	if *data != "" {
		opts = append(opts, kfake.DataDir(*data), kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(1)
	}
	fmt.Println("ready", c.ListenAddrs()[0])
	stdin := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdin) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-stdin:
	}
	c.Close()
}
