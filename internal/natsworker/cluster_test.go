package natsworker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/natsworker"
)

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startCluster runs a three-node JetStream cluster on loopback ports, in
// process, and waits until it has a meta leader.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := freePorts(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	var servers []*server.Server
	dir := t.TempDir()
	for i := range 3 {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			Username:   "u", Password: "p",
			NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "conveyor", Host: "127.0.0.1", Port: ports[3+i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		servers = append(servers, s)
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	for _, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("server %s not ready", s.Name())
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		current, leaders := 0, 0
		for _, s := range servers {
			if s.JetStreamIsCurrent() {
				current++
			}
			if s.JetStreamIsLeader() {
				leaders++
			}
		}
		if current == 3 && leaders == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the JetStream cluster elected no meta leader within 60s")
		}
	}
	return servers
}

// TestClusterNodeLostLosesNoJob: a three-node JetStream cluster, the
// stream kept on all three (replicas 3), two consumers as two workers;
// the node leading the stream is killed mid-run, and every job dispatched
// before and after the loss is run and acknowledged.
func TestClusterNodeLostLosesNoJob(t *testing.T) {
	t.Parallel()
	servers := startCluster(t)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	url := strings.Join(urls, ",")
	sc := natsdispatch.StreamConfig{Replicas: 3}
	connectR3 := func() (jetstream.JetStream, *natsdispatch.Dispatcher) {
		nc, err := natsdispatch.Connect(context.Background(), natsdispatch.ConnConfig{URL: url, User: "u", Password: "p"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		var d *natsdispatch.Dispatcher
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if d, err = natsdispatch.New(context.Background(), js, sc); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("create the R3 stream: %v", err)
			}
		}
		return js, d
	}
	js, d := connectR3()
	const n = 200
	var mu sync.Mutex
	acked := map[string]int{}
	st := newSettlements()
	run := func(ctx context.Context, id string) error {
		time.Sleep(5 * time.Millisecond)
		return nil
	}
	cfg := natsworker.Config{Stream: sc, Slots: 4, Lease: 3 * time.Second, StopDelay: 100 * time.Millisecond, Logf: t.Logf,
		OnSettled: func(id string, err error, action string) {
			if action == "ack" {
				mu.Lock()
				acked[id]++
				mu.Unlock()
			}
			st.on(id, err, action)
		}}
	for range 2 {
		wjs, _ := connectR3()
		c, err := natsworker.New(wjs, cfg, run)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
	}
	dispatchAll := func(from, to int) {
		for i := from; i < to; i++ {
			for deadline := time.Now().Add(60 * time.Second); ; {
				_, err := d.Dispatch(context.Background(), dispatchtest.ID(i))
				if err == nil {
					break
				}
				// What the reconciler does with "not now": try again.
				if !errors.Is(err, dispatch.ErrUnavailable) || time.Now().After(deadline) {
					t.Fatalf("dispatch job %d: %v", i, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	dispatchAll(0, n/2)
	for i := 0; i < n/4; i++ {
		st.next(t)
	}
	// Kill the node that leads the stream.
	s, err := js.Stream(context.Background(), sc.WithDefaults().Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	killed := false
	for _, srv := range servers {
		if info.Cluster != nil && srv.Name() == info.Cluster.Leader {
			srv.Shutdown()
			killed = true
		}
	}
	if !killed {
		t.Fatalf("no server leads the stream: %+v", info.Cluster)
	}
	t.Logf("killed %s, the stream's leader", info.Cluster.Leader)
	dispatchAll(n/2, n)
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		done := len(acked)
		mu.Unlock()
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			var missing []int
			mu.Lock()
			for i := range n {
				if acked[dispatchtest.ID(i)] == 0 {
					missing = append(missing, i)
				}
			}
			mu.Unlock()
			t.Fatalf("%d of %d jobs never acknowledged after the node loss: %v", len(missing), n, missing)
		}
	}
}
