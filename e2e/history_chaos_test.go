package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// journalScript is the processor of TestHistory: it logs its start and end
// to an append-only journal (short lines: each append is atomic), sleeps up
// to 3 s in between, and leaves result.txt naming its job and input.
const journalScript = `J=%q
echo "start $CONVEYOR_JOB_ID $$ $PPID $(date +%%s%%N)" >> "$J"
ms=$(( $(od -An -N2 -tu2 /dev/urandom) %% 3000 ))
sleep "$((ms / 1000)).$(printf %%03d $((ms %% 1000)))"
sum=$(sha256sum "$CONVEYOR_INPUT" | cut -d' ' -f1)
printf 'job %%s\nsha256 %%s\n' "$CONVEYOR_JOB_ID" "$sum" > "$CONVEYOR_OUTPUT_DIR/result.txt"
echo "end $CONVEYOR_JOB_ID $$ $(date +%%s%%N)" >> "$J"
`

// journalComm is the process name of a running journal script, as
// /proc/<pid>/comm shows it; it tells a reused pid from the script.
const journalComm = "journal.sh"

// writeJournalScript writes the processor and checks it can run here.
func writeJournalScript(t *testing.T, dir, journal string) string {
	t.Helper()
	for _, tool := range []string{"sh", "date", "od", "sleep", "sha256sum", "cut"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the journal processor needs %s: %v", tool, err)
		}
	}
	p := writeScript(t, dir, journalComm, fmt.Sprintf(journalScript, journal))
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("%s is not executable (mode %v)", p, st.Mode())
	}
	return p
}

// procAlive reports whether pid runs and, when comm is set, is that
// program. A zombie counts as gone: it runs nothing.
func procAlive(pid int, comm string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	if st := s[i+2]; st == 'Z' || st == 'X' {
		return false
	}
	if comm != "" {
		c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			return false
		}
	}
	return true
}

// waitGone polls until pid no longer runs and returns when it saw that.
func waitGone(pid int, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		now := time.Now()
		if !procAlive(pid, "") {
			return now, true
		}
		if now.After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runWatcher follows the journal: it parses start and end lines as they
// are appended and polls the pid of every run without an end, noting when
// it is gone.
type runWatcher struct {
	path string
	mu   sync.Mutex
	runs []procRun
	open map[int]int // pid -> index in runs, for runs without end nor gone
	off  int64
	bad  []string // lines that did not parse
	stop chan struct{}
	done chan struct{}
}

func startRunWatcher(path string) *runWatcher {
	w := &runWatcher{path: path, open: map[int]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			w.poll()
			select {
			case <-w.stop:
				w.poll()
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

// Stop ends the watch and returns the runs and the lines it could not read.
func (w *runWatcher) Stop() ([]procRun, []string) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]procRun(nil), w.runs...), w.bad
}

func (w *runWatcher) poll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f, err := os.Open(w.path); err == nil {
		if _, err := f.Seek(w.off, 0); err == nil {
			r := bufio.NewReader(f)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					break // a partial last line is read again next time
				}
				w.off += int64(len(line))
				w.parse(strings.TrimSpace(line))
			}
		}
		f.Close()
	}
	now := time.Now()
	for pid, i := range w.open {
		if !procAlive(pid, journalComm) {
			w.runs[i].Gone = now
			delete(w.open, pid)
		}
	}
}

func (w *runWatcher) parse(line string) {
	f := strings.Fields(line)
	nanos := func(s string) (time.Time, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return time.Unix(0, n), err == nil
	}
	switch {
	case len(f) == 5 && f[0] == "start":
		pid, err1 := strconv.Atoi(f[2])
		ppid, err2 := strconv.Atoi(f[3])
		at, ok := nanos(f[4])
		if err1 != nil || err2 != nil || !ok {
			break
		}
		w.runs = append(w.runs, procRun{Job: f[1], PID: pid, PPID: ppid, Start: at})
		w.open[pid] = len(w.runs) - 1
		return
	case len(f) == 4 && f[0] == "end":
		pid, err := strconv.Atoi(f[2])
		at, ok := nanos(f[3])
		if err != nil || !ok {
			break
		}
		for i := len(w.runs) - 1; i >= 0; i-- {
			if r := &w.runs[i]; r.PID == pid && r.Job == f[1] && r.End.IsZero() {
				r.End = at
				delete(w.open, pid)
				return
			}
		}
	}
	w.bad = append(w.bad, line)
}

// workerLog is the list of worker processes, safe for concurrent use.
type workerLog struct {
	mu   sync.Mutex
	ws   []workerProc
	sent map[int]string // index -> how the test is stopping it
}

// add records a new process and returns its index.
func (l *workerLog) add(w workerProc) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ws = append(l.ws, w)
	return len(l.ws) - 1
}

// died records how and when process i ended, unless already recorded.
// A process the test signaled died of that signal, whoever notices first.
func (l *workerLog) died(i int, at time.Time, how string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent, ok := l.sent[i]; ok {
		how = sent
	}
	if l.ws[i].Death.IsZero() {
		l.ws[i].Death, l.ws[i].How = at, how
	}
}

// signaled records that the test is about to stop process i, and how.
func (l *workerLog) signaled(i int, at time.Time, how string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent == nil {
		l.sent = map[int]string{}
	}
	if l.ws[i].Signaled.IsZero() {
		l.ws[i].Signaled = at
	}
	l.sent[i] = how
}

func (l *workerLog) all() []workerProc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]workerProc(nil), l.ws...)
}

// signalUp stops the running `conveyor up` with sig and records when its
// pid was gone. After a SIGTERM it waits stopTimeout, then kills it.
func signalUp(t *testing.T, up *upProc, sig syscall.Signal, wl *workerLog, idx int) {
	t.Helper()
	how := howKill9
	if sig == syscall.SIGTERM {
		how = howTerm
	}
	wl.signaled(idx, time.Now(), how)
	if err := up.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal conveyor up pid %d: %v", up.PID(), err)
	}
	at, ok := waitGone(up.PID(), stopTimeout)
	if !ok {
		t.Logf("conveyor up pid %d still runs %s after %s; killing it", up.PID(), stopTimeout, how)
		wl.signaled(idx, time.Now(), how+" then kill -9")
		_ = up.cmd.Process.Kill()
		at, how = time.Now(), how+" then kill -9"
	}
	wl.died(idx, at, how)
	<-up.exited
}

// cloneWorker is a `conveyor worker run` on the clone volume.
type cloneWorker struct {
	idx  int
	cmd  *exec.Cmd
	done chan struct{}
}

// startCloneWorker runs `conveyor worker run --job id` on the clone volume
// against the pipeline's S3 server; its output goes to files in dir.
func startCloneWorker(t *testing.T, cfg, volume, dir, id, volumeID string, wl *workerLog) (*cloneWorker, error) {
	t.Helper()
	out, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%s-%d.log", id[:8], time.Now().UnixNano())))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(conveyorBin, "worker", "run", "--job", id, "--volume", volume, "--config", cfg)
	cmd.Env = cleanEnv()
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	c := &cloneWorker{cmd: cmd, done: make(chan struct{})}
	c.idx = wl.add(workerProc{Kind: "clone", PID: cmd.Process.Pid, VolumeID: volumeID, Job: id, Start: time.Now()})
	go func() {
		defer close(c.done)
		_ = cmd.Wait()
		wl.died(c.idx, time.Now(), fmt.Sprintf("%s (code %d)", howExit, cmd.ProcessState.ExitCode()))
		out.Close()
	}()
	return c, nil
}

func (c *cloneWorker) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// signal stops the clone worker and records its death.
func (c *cloneWorker) signal(sig syscall.Signal, wl *workerLog) {
	how := howKill9
	if sig == syscall.SIGTERM {
		how = howTerm
	}
	if !c.running() {
		return
	}
	wl.signaled(c.idx, time.Now(), how)
	if c.cmd.Process.Signal(sig) != nil {
		return // already gone
	}
	if at, ok := waitGone(c.cmd.Process.Pid, stopTimeout); ok {
		wl.died(c.idx, at, how)
	} else {
		wl.signaled(c.idx, time.Now(), how+" then kill -9")
		_ = c.cmd.Process.Kill()
		wl.died(c.idx, time.Now(), how+" then kill -9")
	}
	<-c.done
}

// readVolumeID reads the identity a volume's worker records as owner.
func readVolumeID(t *testing.T, volume string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(volume, "volume-id"))
	if err != nil {
		t.Fatalf("read the volume's identity: %v", err)
	}
	return strings.TrimSpace(string(b))
}
