package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/s3server"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// crashChildEnv carries a crashChild to the re-executed test binary.
const crashChildEnv = "CONVEYOR_SNAPSHOT_CRASH_CHILD"

// crashChild is the operation a child process runs, killed by the crash
// seam (crash.go) on the way.
type crashChild struct {
	Endpoint, Bucket, Source string
	Op                       string // create, prune, repair
	// LockRefresh, when set, makes the lock keeper refresh that often,
	// so that a short operation refreshes at least once.
	LockRefresh time.Duration
}

// TestCrashHelper is not a test: it is the child process of
// TestCrashAtEveryWriteStep, and does nothing without crashChildEnv.
func TestCrashHelper(t *testing.T) {
	v := os.Getenv(crashChildEnv)
	if v == "" {
		return
	}
	var c crashChild
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Bucket: c.Bucket, Source: c.Source, PackSize: 1 << 20, Workers: 1, Key: testKey(), LockRefresh: c.LockRefresh}
	if c.LockRefresh > 0 {
		cfg.StaleLock = time.Minute
	}
	ctx := context.Background()
	r, err := Open(ctx, s3server.NewClient(c.Endpoint, s3test.AccessKey, s3test.SecretKey, s3test.Region), cfg)
	if err != nil {
		t.Fatal(err)
	}
	switch c.Op {
	case "create":
		_, err = r.Create(ctx, snapshot.CreateOptions{})
	case "prune":
		_, err = r.Prune(ctx, snapshot.Policy{KeepLast: 1})
	case "repair":
		_, err = r.Repair(ctx)
	default:
		err = fmt.Errorf("unknown operation %q", c.Op)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Reaching here means the crash point was not passed as often as
	// asked: say how often each one was.
	hits, _ := json.Marshal(crashHits())
	fmt.Printf("%s%s\n", crashHitsLine, hits)
}

// crashHitsLine starts the line on which a child that finished reports
// how many times it passed each crash point.
const crashHitsLine = "crash child finished; hits: "

// crashScenario is a repository in the state an operation is crash-tested
// from.
type crashScenario struct {
	r  *Repo
	b  bundle
	op string // what the child runs
	// before lists what verify found wrong before the operation: the
	// damage repair is run for. A crash may leave no more than that.
	before []string
}

// TestCrashAtEveryWriteStep kills create, prune and repair with SIGKILL
// right after each of their write steps, at every pass of every point the
// engine declares (CrashPoints), each in a child process. Then, as a user
// would: verify (which removes the dead process's lock) finds nothing
// wrong that was not wrong before; the operation run again is killed at
// the same step if it gets there, and verify again finds nothing new; run
// once more it completes, verify is clean, and the latest snapshot
// restores equal to the volume.
func TestCrashAtEveryWriteStep(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	points := CrashPoints()
	if len(points) < 20 {
		t.Fatalf("only %d crash points declared: %v", len(points), points)
	}
	groups := map[string][]string{}
	for _, p := range points {
		g := strings.SplitN(p, "/", 2)[0]
		groups[g] = append(groups[g], p)
	}
	// At most two scenarios at once: each is a few creates.
	sem := make(chan struct{}, 2)
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		t.Run(g, func(t *testing.T) {
			t.Parallel()
			// How many times the operation passes each point, from a
			// run that is not killed: the scenario is deterministic
			// (one worker), so every pass is killed at in turn.
			hits := func() map[string]int64 {
				sem <- struct{}{}
				defer func() { <-sem }() // also when the setup fails
				return crashCount(t, exe, newCrashScenario(t, g), groups[g][0])
			}()
			for _, p := range groups[g] {
				n := hits[p]
				if n == 0 {
					t.Errorf("crash point %s is never passed by the %s scenario: make the scenario reach it", p, g)
				}
				if strings.HasSuffix(p, "/lock-refreshed") {
					n = min(n, 1) // a timer's, as often as the clock says
				}
				for nth := int64(1); nth <= n; nth++ {
					t.Run(fmt.Sprintf("%s:%d", p, nth), func(t *testing.T) {
						t.Parallel()
						sem <- struct{}{}
						defer func() { <-sem }()
						sc := newCrashScenario(t, g)
						crashRun(t, exe, sc, p, nth, false)
						sc.noNewProblems(t)
						// The run started next is killed at the same
						// step, if it gets there, and again nothing is
						// lost.
						crashRun(t, exe, sc, p, nth, true)
						sc.recover(t)
					})
				}
			}
		})
	}
}

// newCrashScenario builds the repository the operation of group starts
// from: init (no repository yet), create (a volume changed since the
// last snapshot), prune (a snapshot to forget, packs to drop and to
// repack), repair (an index object lost, a damaged pack to salvage).
// Each has a stale lock of a dead process, as an earlier crash leaves.
func newCrashScenario(t *testing.T, group string) *crashScenario {
	t.Helper()
	ctx := context.Background()
	srv := s3test.Start(t)
	b := bundle{srv: srv, bucket: srv.Bucket(t, "crash"), src: filepath.Join(t.TempDir(), "volume")}
	makeTree(t, b.src, 20, 256<<10)
	sc := &crashScenario{b: b, op: group}
	if group == "init" {
		sc.op = "create"
		return sc
	}
	sameIdentity(t, b)
	sc.r = sc.open(t)
	r := sc.r
	crashIdentity.mu.Lock()
	if crashIdentity.master == nil {
		crashIdentity.master = r.master
	}
	same := bytes.Equal(crashIdentity.master, r.master)
	crashIdentity.mu.Unlock()
	if !same {
		t.Fatal("setup: this scenario's repository has a master key of its own")
	}
	rng := rand.New(rand.NewSource(7))
	mt := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	create := func() {
		t.Helper()
		if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	switch group {
	case "create":
		create()
		writeFile(t, filepath.Join(b.src, "new", "a.bin"), randBytes(rng, 1500<<10), 0o644, mt)
		writeFile(t, filepath.Join(b.src, "one"), []byte("changed"), 0o600, mt)
	case "prune":
		// Forgetting the first snapshot drops old/ whole (its packs go)
		// and three files in four of mix/ (the packs holding them are
		// mostly unused: rewritten).
		writeFile(t, filepath.Join(b.src, "old", "a.bin"), randBytes(rng, 2<<20), 0o644, mt)
		for i := 0; i < 300; i++ {
			writeFile(t, filepath.Join(b.src, "mix", fmt.Sprintf("f%03d", i)), randBytes(rng, 4<<10), 0o644, mt)
		}
		create()
		must(t, os.RemoveAll(filepath.Join(b.src, "old")))
		for i := 0; i < 300; i++ {
			if i%4 != 0 {
				must(t, os.Remove(filepath.Join(b.src, "mix", fmt.Sprintf("f%03d", i))))
			}
		}
		create()
	case "repair":
		create()
		before := objectNames(t, r, "index/")
		writeFile(t, filepath.Join(b.src, "new", "a.bin"), randBytes(rng, 1500<<10), 0o644, mt)
		create()
		var lost []string
		for _, n := range objectNames(t, r, "index/") {
			if !slices.Contains(before, n) {
				lost = append(lost, n)
			}
		}
		if len(lost) != 1 {
			t.Fatalf("the second snapshot wrote index objects %v, want one", lost)
		}
		must(t, r.del(ctx, lost[0]))
		sc.plantDamagedPack(t)
		_, err := r.Verify(ctx, "", nil)
		if !errors.Is(err, snapshot.ErrCorrupt) {
			t.Fatalf("verify with an index object lost: %v, want ErrCorrupt", err)
		}
		sc.before = sc.problems(t)
	default:
		t.Fatalf("crash point group %q has no scenario: add one", group)
	}
	putLock(t, r, "locks/dead", lockInfo{Exclusive: true, Op: "prune", Host: hostname(), PID: deadPID(t), Machine: machineID(), Created: time.Now(), Refreshed: time.Now()})
	return sc
}

// crashIdentity is one repository's config and key objects, which every
// crash scenario's repository starts from (sameIdentity).
var crashIdentity struct {
	once   sync.Once
	objs   map[string][]byte
	mu     sync.Mutex
	master []byte // the first scenario's, which all the others must have
}

// sameIdentity gives the repository in b's bucket the identity (config and
// key, so the master key) that every crash scenario shares. The chunker
// is keyed: with another key the same files are cut into other chunks and
// so other packs, and a scenario could pass a crash point more or fewer
// times than the one that counted its passes.
func sameIdentity(t *testing.T, b bundle) {
	t.Helper()
	ctx := context.Background()
	crashIdentity.once.Do(func() {
		bucket := b.srv.Bucket(t, "crash-identity")
		if _, err := Open(ctx, b.srv.Client, Config{Bucket: bucket, Source: b.src, Key: testKey()}); err != nil {
			t.Fatal(err)
		}
		list, err := b.srv.Client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket})
		if err != nil {
			t.Fatal(err)
		}
		objs := map[string][]byte{}
		for _, o := range list.Contents {
			out, err := b.srv.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(out.Body)
			out.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			objs[aws.ToString(o.Key)] = body
		}
		crashIdentity.objs = objs
	})
	if len(crashIdentity.objs) < 2 {
		t.Fatalf("the shared repository identity has %d objects, want a config and a key", len(crashIdentity.objs))
	}
	for key, body := range crashIdentity.objs {
		if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.bucket, Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
}

func (sc *crashScenario) open(t *testing.T) *Repo {
	t.Helper()
	r, err := Open(context.Background(), sc.b.srv.Client, Config{Bucket: sc.b.bucket, Source: sc.b.src, PackSize: 1 << 20, Workers: 1, Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// plantDamagedPack stores, unindexed, a pack of two blobs that no
// snapshot uses, with a byte of the second flipped: repair salvages the
// first into a new pack and deletes the damaged one.
func (sc *crashScenario) plantDamagedPack(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	r := sc.r
	rng := rand.New(rand.NewSource(11))
	pk := newPacker(ctx, r)
	cd := r.newCodec()
	for _, n := range []int{100 << 10, 50 << 10} {
		data := randBytes(rng, n)
		stored, z := cd.store(r.sealer.blobID(data), data)
		must(t, pk.add(r.sealer.blobID(data), blobData, stored, z, len(data)))
	}
	packs, err := pk.finish()
	if err != nil || len(packs) != 1 {
		t.Fatalf("plant a pack: %v, %d packs", err, len(packs))
	}
	e := packs[0].Entries[1]
	flipByte(t, sc.b, r.key("packs/"+packs[0].ID.String()), int(e.Offset)+int(e.Length)/2)
}

// problems is what verify finds wrong now.
func (sc *crashScenario) problems(t *testing.T) []string {
	t.Helper()
	rep, err := sc.r.Verify(context.Background(), "", nil)
	if err != nil && !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("verify: %v", err)
	}
	return rep.Problems
}

// crashChildCmd is the child process running the scenario's operation
// with the crash seam set to crashAt.
func crashChildCmd(exe string, sc *crashScenario, crashAt string, refresh time.Duration) (*exec.Cmd, *bytes.Buffer) {
	c := crashChild{Endpoint: sc.b.srv.Endpoint, Bucket: sc.b.bucket, Source: sc.b.src, Op: sc.op, LockRefresh: refresh}
	spec, _ := json.Marshal(c)
	cmd := exec.Command(exe, "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+string(spec), CrashEnv+"="+crashAt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

// crashCount runs the scenario's operation to its end with the seam on
// (at point, past its last pass) and returns how often it passed each
// point.
func crashCount(t *testing.T, exe string, sc *crashScenario, point string) map[string]int64 {
	t.Helper()
	cmd, out := crashChildCmd(exe, sc, point+":1000000000", 2*time.Millisecond)
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s with the crash seam on, never killed: %v\n%s", sc.op, err, out)
	}
	_, line, ok := strings.Cut(out.String(), crashHitsLine)
	line, _, _ = strings.Cut(line, "\n")
	hits := map[string]int64{}
	if !ok || json.Unmarshal([]byte(line), &hits) != nil {
		t.Fatalf("%s with the crash seam on: no count of passes:\n%s", sc.op, out)
	}
	return hits
}

// crashRun runs the scenario's operation in a child process with the
// crash seam set at the nth pass of point, and checks that it was killed
// there, or (mayFinish) that it finished without passing there that often.
func crashRun(t *testing.T, exe string, sc *crashScenario, point string, nth int64, mayFinish bool) {
	t.Helper()
	var refresh time.Duration
	if strings.HasSuffix(point, "/lock-refreshed") {
		refresh = 2 * time.Millisecond
	}
	at := fmt.Sprintf("%s:%d", point, nth)
	cmd, out := crashChildCmd(exe, sc, at, refresh)
	err := cmd.Run()
	if err == nil && mayFinish && strings.Contains(out.String(), crashHitsLine) {
		return
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s at %s: %v, want killed by SIGKILL\n%s", sc.op, at, err, out)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s at %s: %v, want killed by SIGKILL\n%s", sc.op, at, err, out)
	}
	if want := "crash point " + at + " reached"; !strings.Contains(out.String(), want) {
		t.Fatalf("%s killed, but not at %s:\n%s", sc.op, at, out)
	}
}

// noNewProblems checks that verify, as a user runs it after a crash,
// finds nothing wrong that was not wrong before. Its shared lock removes
// the dead process's lock, as stale.
func (sc *crashScenario) noNewProblems(t *testing.T) {
	t.Helper()
	if sc.r == nil {
		sc.r = sc.open(t) // a repository half created is created or opened
	}
	for _, p := range sc.problems(t) {
		if !slices.Contains(sc.before, p) {
			t.Fatalf("after the crash, verify finds a new problem: %s\n(before: %q)", p, sc.before)
		}
	}
}

// recover does what a user does after the crash, and checks that nothing
// was lost.
func (sc *crashScenario) recover(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	sc.noNewProblems(t)
	r := sc.r
	switch sc.op {
	case "create":
		if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
			t.Fatalf("create again: %v", err)
		}
	case "prune":
		if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); err != nil {
			t.Fatalf("prune again: %v", err)
		}
		if list, err := r.List(ctx); err != nil || len(list) != 1 {
			t.Fatalf("after prune: %d snapshots (%v), want 1", len(list), err)
		}
		// What the crashed prune had copied is not kept twice.
		noBlobTwice(t, r)
	case "repair":
		rep, err := r.Repair(ctx)
		if err != nil {
			t.Fatalf("repair again: %v", err)
		}
		if rep.Lost() {
			t.Fatalf("repair again: data lost:\n%s", rep)
		}
	}
	if rep, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatalf("verify after %s ran again: %v", sc.op, err)
	} else if rep.Snapshots == 0 {
		t.Fatal("verify read no snapshot")
	}
	restoreAndCompare(t, r, mustLatest(t, r).ID, sc.b.src)
	if locks := objectNames(t, r, "locks/"); len(locks) != 0 {
		t.Fatalf("locks left behind: %v", locks)
	}
}

func objectNames(t *testing.T, r *Repo, dir string) []string {
	t.Helper()
	objs, err := r.list(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Name)
	}
	return out
}

// noBlobTwice fails when the index names a blob in two packs.
func noBlobTwice(t *testing.T, r *Repo) {
	t.Helper()
	x, err := r.loadIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in := map[ID]ID{}
	for p, es := range x.packs {
		for _, e := range es {
			if q, dup := in[e.ID]; dup {
				t.Fatalf("blob %s is in two packs, %s and %s", e.ID, p, q)
			}
			in[e.ID] = p
		}
	}
}

// A prune stopped after writing its new index, before removing the old
// one, leaves the blobs it rewrote in two packs, both indexed: the next
// prune keeps one copy, not both for good.
func TestPruneAfterInterruptedPruneKeepsOneCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := newCrashScenario(t, "prune")
	r := sc.r
	indexBefore := objectNames(t, r, "index/")
	cut, fl := openFast(t, sc.b, time.Minute, 10*time.Second)
	fail := func(req *http.Request) bool {
		return req.Method == http.MethodDelete && strings.Contains(req.URL.Path, "/index/")
	}
	fl.fail.Store(&fail)
	if _, err := cut.Prune(ctx, snapshot.Policy{KeepLast: 1}); err == nil || !strings.Contains(err.Error(), "index/") {
		t.Fatalf("prune that cannot delete the old index: %v, want an error naming it", err)
	}
	if n := len(objectNames(t, r, "index/")); n != len(indexBefore)+1 {
		t.Fatalf("%d index objects after the cut prune, want the %d old ones and its new one", n, len(indexBefore))
	}
	rep, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksDeleted == 0 {
		t.Fatalf("the second prune deleted no pack: %+v", rep)
	}
	noBlobTwice(t, r)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, mustLatest(t, r).ID, sc.b.src)
}

// BenchmarkCrashPoint is what a crash point costs a write step with the
// seam off (CONVEYOR_SNAPSHOT_CRASH_AT unset): compare with the write.
func BenchmarkCrashPoint(b *testing.B) {
	if crashAt != nil {
		b.Skip(CrashEnv + " is set")
	}
	for b.Loop() {
		crashCreatePack.hit()
	}
}
