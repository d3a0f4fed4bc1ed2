package bus

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// The test binary doubles as a one-broker Kafka (franz-go's kfake) when
// run with BUS_KFAKE_PORT set, so tests can stop and restart a real
// Kafka-protocol broker as a separate process.
func TestMain(m *testing.M) {
	if port := os.Getenv("BUS_KFAKE_PORT"); port != "" {
		os.Exit(runBroker(port, os.Getenv("BUS_KFAKE_DIR")))
	}
	os.Exit(m.Run())
}

// runBroker serves until stdin closes (the test ended or died) or SIGTERM.
func runBroker(port, dir string) int {
	p, err := strconv.Atoi(port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad port:", err)
		return 2
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(3), kfake.DataDir(dir), kfake.SyncWrites())
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		return 1
	}
	fmt.Println("ready", c.ListenAddrs()[0])
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	sig := make(chan os.Signal, 1)
	notifyTerm(sig)
	select {
	case <-stop:
	case <-sig:
	}
	c.Close()
	return 0
}

// broker is a kfake process.
type broker struct {
	t     *testing.T
	port  int
	dir   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startBroker starts a broker process on port with data in dir.
func startBroker(t *testing.T, port int, dir string) *broker {
	t.Helper()
	b := &broker{t: t, port: port, dir: dir}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for attempt := 0; ; attempt++ {
		err := b.try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || attempt > 30 {
			b.t.Fatalf("broker: %v", err)
		}
		time.Sleep(300 * time.Millisecond) // the port may linger after a stop
	}
}

func (b *broker) try() error {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BUS_KFAKE_PORT="+strconv.Itoa(b.port), "BUS_KFAKE_DIR="+b.dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-line:
		if ok && strings.HasPrefix(l, "ready ") {
			b.cmd, b.stdin, b.addr = cmd, stdin, strings.TrimPrefix(l, "ready ")
			return nil
		}
	case <-time.After(10 * time.Second):
	}
	stdin.Close()
	cmd.Process.Kill()
	cmd.Wait()
	return fmt.Errorf("broker on port %d did not start", b.port)
}

// stop terminates the broker and waits (bounded) for it to exit.
func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	terminate(b.cmd.Process)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.stdin.Close()
	b.cmd = nil
}
