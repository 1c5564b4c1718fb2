package e2e

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestLambdaMeasure reports the figures of the closing note; it runs only
// with CONVEYOR_MEASURE=1:
//
//	CONVEYOR_MEASURE=1 go test ./e2e -run LambdaMeasure -count=1 -v
//
// the bootstrap's size as the Makefile builds it (linux/arm64, -trimpath,
// -ldflags "-s -w", zipped), and the median of 20 cold starts under the
// emulator: from starting the emulator to the response of the first event
// (one new object: a record created and a command sent).
func TestLambdaMeasure(t *testing.T) {
	if os.Getenv("CONVEYOR_MEASURE") != "1" {
		t.Skip("set CONVEYOR_MEASURE=1 to measure the bootstrap's size and cold start")
	}
	rieBinary(t)
	dir := t.TempDir()
	arm := filepath.Join(dir, "bootstrap")
	if err := goBuild(arm, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"}, "-trimpath", "-ldflags", "-s -w"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(arm)
	if err != nil {
		t.Fatal(err)
	}
	zipped := zipSize(t, arm)
	t.Logf("bootstrap linux/arm64: %.1f MiB unzipped (%d bytes), %.1f MiB zipped (%d bytes)",
		float64(st.Size())/(1<<20), st.Size(), float64(zipped)/(1<<20), zipped)

	up := startLambdaUp(t)
	ssm := newFakeSSM(t, up, nil)
	env := lambdaEnv(up, ssm)
	var times []time.Duration
	for i := range 20 {
		oc := upload(t, up.S3, "measure/"+strconv.Itoa(i)+".txt", []byte("cold start "+strconv.Itoa(i)))
		event := notificationOf(t, oc)
		rie := startRIE(t, env)
		resp, raw := rie.invoke(t, event)
		times = append(times, time.Since(rie.Started))
		if resp.Created != 1 {
			t.Fatalf("cold start %d: %s", i, raw)
		}
		rie.cmd.Process.Kill()
		<-rie.exited
	}
	slices.Sort(times)
	t.Logf("cold start to first handled event under aws-lambda-rie (linux/amd64 bootstrap, %d runs): median %s, min %s, max %s",
		len(times), (times[9]+times[10])/2, times[0], times[len(times)-1])
}

// zipSize zips the file as the Makefile does (deflate) and returns the size.
func zipSize(t *testing.T, path string) int64 {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "bootstrap", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return int64(buf.Len())
}
