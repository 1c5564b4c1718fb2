package e2e

// The emulator: the bootstrap built as the Makefile builds it, run under
// the AWS Lambda Runtime Interface Emulator, and invoked over HTTP.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	lambdaRIEVersion = "v0.0.0-20261030222936-bef5c4ba774d" // what to install when it is missing
	invokeTimeout    = 60 * time.Second                     // how long the emulator may take to listen
)

var (
	bootstrapOnce sync.Once
	bootstrapPath string
	bootstrapErr  error
)

// lambdaBootstrap builds the bootstrap for this machine, as the Makefile
// builds it for Lambda (-tags lambda.norpc), once per test binary.
func lambdaBootstrap(t *testing.T) string {
	t.Helper()
	bootstrapOnce.Do(func() {
		dir := filepath.Dir(conveyorBin)
		bootstrapPath = filepath.Join(dir, "lambda", "bootstrap")
		bootstrapErr = goBuild(bootstrapPath, nil)
	})
	if bootstrapErr != nil {
		t.Fatal(bootstrapErr)
	}
	return bootstrapPath
}

func goBuild(out string, env []string, flags ...string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	args := append([]string{"build", "-tags", "lambda.norpc"}, flags...)
	cmd := exec.Command("go", append(args, "-o", out, "./cmd/conveyor-lambda")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build conveyor-lambda: %v\n%s", err, b)
	}
	return nil
}

// rieBinary finds the emulator on PATH or in $(go env GOPATH)/bin.
func rieBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "aws-lambda-rie")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("aws-lambda-rie is not installed (neither on PATH nor in $(go env GOPATH)/bin); install it with " +
		"go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@" + lambdaRIEVersion)
	return ""
}

// rieProc is a running aws-lambda-rie with the bootstrap.
type rieProc struct {
	addr    string
	URL     string
	Started time.Time
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
}

// startRIE starts the emulator on free loopback ports. The emulator starts
// the bootstrap (the Lambda init) on the first invocation. A port picked
// free can be taken by a parallel test before the emulator binds it: an
// emulator that exits before it listens is started again on other ports.
func startRIE(t *testing.T, env []string) *rieProc {
	t.Helper()
	for try := 1; ; try++ {
		p := tryStartRIE(t, env)
		if p.listening() {
			return p
		}
		if try == 3 {
			t.Fatalf("aws-lambda-rie exited before it listened, %d times:\n%s", try, p.out)
		}
	}
}

func tryStartRIE(t *testing.T, env []string) *rieProc {
	t.Helper()
	rie, bootstrap := rieBinary(t), lambdaBootstrap(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &rieProc{addr: addr, URL: "http://" + addr + "/2015-03-31/functions/function/invocations", out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(rie,
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--log-level", "error",
		bootstrap)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("aws-lambda-rie output:\n%s", p.out)
		}
	})
	return p
}

// listening waits until the emulator accepts connections (true) or exits
// (false).
func (p *rieProc) listening() bool {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// invoke sends one event and returns the handler's response document, or
// Lambda's error document for a function error.
func (p *rieProc) invoke(t *testing.T, event []byte) (lambdaResponse, []byte) {
	t.Helper()
	status, body := p.invokeRaw(t, event)
	if status != http.StatusOK {
		t.Fatalf("invoke: HTTP %d: %s", status, body)
	}
	var r lambdaResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("invoke response %s: %v", body, err)
	}
	return r, body
}

// invokeRaw sends one event and returns the emulator's HTTP status and
// body. Connection errors are retried until the emulator listens.
func (p *rieProc) invokeRaw(t *testing.T, event []byte) (int, []byte) {
	t.Helper()
	deadline := time.Now().Add(invokeTimeout)
	for {
		resp, err := http.Post(p.URL, "application/json", bytes.NewReader(event))
		if err != nil {
			select {
			case <-p.exited:
				t.Fatalf("aws-lambda-rie exited:\n%s", p.out)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("invoke: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, body
	}
}

// lambdaResponse is the handler's response, or Lambda's error document.
type lambdaResponse struct {
	Created    int    `json:"created"`
	Duplicate  int    `json:"duplicate"`
	Filtered   int    `json:"filtered"`
	BadRecords int    `json:"bad_records"`
	Failed     int    `json:"failed"`
	Ignored    string `json:"ignored"`
	Reconciled *struct {
		Objects, Missing, Unfinished int
	} `json:"reconciled"`
	Records []struct {
		Outcome string `json:"outcome"`
		JobID   string `json:"job_id"`
		Key     string `json:"key"`
	} `json:"records"`
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType"`
}
