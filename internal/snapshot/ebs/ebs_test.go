package ebs

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// fakeEC2 answers the EC2 query protocol (form in, XML out) for one
// instance, its volumes and snapshots. States move one step per Describe,
// so the driver's waits are exercised.
type fakeEC2 struct {
	t       *testing.T
	mu      sync.Mutex
	state   string            // instance state
	volumes map[string]string // id -> state
	attach  map[string]string // volume -> device
	snaps   []fakeSnap
	actions []string
	n       int
}

type fakeSnap struct {
	ID, Volume, State string
	Start             time.Time
	Tags              map[string]string
}

func (f *fakeEC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Version") != "2016-11-15" {
		f.t.Errorf("bad EC2 request %q: %v", body, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	op := form.Get("Action")
	if !strings.HasPrefix(op, "Describe") {
		f.actions = append(f.actions, op)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<%sResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId>`, op)
	switch op {
	case "DescribeSnapshots":
		ids := list(form, "SnapshotId")
		b.WriteString("<snapshotSet>")
		for _, s := range f.snaps {
			if len(ids) > 0 && ids[0] != s.ID || !f.tagsMatch(form, s.Tags) {
				continue
			}
			fmt.Fprintf(&b, "<item><snapshotId>%s</snapshotId><volumeId>%s</volumeId><status>%s</status><startTime>%s</startTime><volumeSize>8</volumeSize><tagSet>", s.ID, s.Volume, s.State, s.Start.Format(time.RFC3339))
			for k, v := range s.Tags {
				fmt.Fprintf(&b, "<item><key>%s</key><value>%s</value></item>", k, v)
			}
			b.WriteString("</tagSet></item>")
		}
		b.WriteString("</snapshotSet>")
	case "CreateSnapshot":
		f.n++
		s := fakeSnap{ID: fmt.Sprintf("snap-%d", f.n), Volume: form.Get("VolumeId"), State: "pending", Start: time.Date(2026, 11, 27, 3, 0, f.n, 0, time.UTC), Tags: tagsOf(form)}
		f.snaps = append(f.snaps, s)
		fmt.Fprintf(&b, "<snapshotId>%s</snapshotId><volumeId>%s</volumeId><status>pending</status><startTime>%s</startTime>", s.ID, s.Volume, s.Start.Format(time.RFC3339))
	case "DeleteSnapshot":
		b.WriteString("<return>true</return>")
	case "DescribeInstances":
		if f.state == "stopping" {
			f.state = "stopped"
		} else if f.state == "pending" {
			f.state = "running"
		}
		fmt.Fprintf(&b, "<reservationSet><item><instancesSet><item><instanceId>i-1</instanceId><instanceState><code>0</code><name>%s</name></instanceState><placement><availabilityZone>eu-west-1b</availabilityZone></placement></item></instancesSet></item></reservationSet>", f.state)
	case "StopInstances":
		f.state = "stopping"
		b.WriteString("<instancesSet/>")
	case "StartInstances":
		if f.state != "stopped" {
			f.t.Errorf("start while %s", f.state)
		}
		f.state = "pending"
		b.WriteString("<instancesSet/>")
	case "CreateVolume":
		if form.Get("AvailabilityZone") != "eu-west-1b" || form.Get("SnapshotId") == "" || form.Get("Encrypted") != "true" {
			f.t.Errorf("CreateVolume %v", form)
		}
		f.n++
		id := fmt.Sprintf("vol-new%d", f.n)
		f.volumes[id] = "creating"
		fmt.Fprintf(&b, "<volumeId>%s</volumeId><status>creating</status>", id)
	case "DescribeVolumes":
		b.WriteString("<volumeSet>")
		for _, id := range list(form, "VolumeId") {
			switch f.volumes[id] {
			case "creating", "detaching":
				f.volumes[id] = "available"
			case "attaching":
				f.volumes[id] = "in-use"
			}
			fmt.Fprintf(&b, "<item><volumeId>%s</volumeId><status>%s</status></item>", id, f.volumes[id])
		}
		b.WriteString("</volumeSet>")
	case "DetachVolume", "AttachVolume":
		if f.state != "stopped" {
			f.t.Errorf("%s while the instance is %s", op, f.state)
		}
		id := form.Get("VolumeId")
		if op == "DetachVolume" {
			f.volumes[id] = "detaching"
			delete(f.attach, id)
		} else {
			f.volumes[id] = "attaching"
			f.attach[id] = form.Get("Device")
		}
		fmt.Fprintf(&b, "<volumeId>%s</volumeId><instanceId>i-1</instanceId><status>%s</status>", id, f.volumes[id])
	default:
		f.t.Errorf("unexpected action %s", op)
		w.WriteHeader(400)
		return
	}
	fmt.Fprintf(&b, "</%sResponse>", op)
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	io.WriteString(w, xml.Header)
	w.Write(b.Bytes())
}

func list(form url.Values, prefix string) []string {
	var vs []string
	for i := 1; form.Has(prefix + "." + strconv.Itoa(i)); i++ {
		vs = append(vs, form.Get(prefix+"."+strconv.Itoa(i)))
	}
	return vs
}

func tagsOf(form url.Values) map[string]string {
	tags := map[string]string{}
	for i := 1; form.Has(fmt.Sprintf("TagSpecification.1.Tag.%d.Key", i)); i++ {
		tags[form.Get(fmt.Sprintf("TagSpecification.1.Tag.%d.Key", i))] = form.Get(fmt.Sprintf("TagSpecification.1.Tag.%d.Value", i))
	}
	return tags
}

func (f *fakeEC2) tagsMatch(form url.Values, tags map[string]string) bool {
	for i := 1; form.Has(fmt.Sprintf("Filter.%d.Name", i)); i++ {
		k := strings.TrimPrefix(form.Get(fmt.Sprintf("Filter.%d.Name", i)), "tag:")
		if tags[k] != form.Get(fmt.Sprintf("Filter.%d.Value.1", i)) {
			return false
		}
	}
	return true
}

func setup(t *testing.T) (*Driver, *fakeEC2, *bytes.Buffer) {
	t.Helper()
	f := &fakeEC2{t: t, state: "running", volumes: map[string]string{"vol-data": "in-use"}, attach: map[string]string{"vol-data": "/dev/sdf"}}
	f.snaps = []fakeSnap{
		{ID: "snap-old", Volume: "vol-data", State: "completed", Start: time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC), Tags: map[string]string{"Backup": "True"}},
		{ID: "snap-other", Volume: "vol-x", State: "completed", Start: time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC), Tags: map[string]string{"Backup": "False"}},
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	client := ec2.New(ec2.Options{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL), Credentials: credentials.NewStaticCredentialsProvider("AK", "SK", "")})
	var out bytes.Buffer
	d, err := New(client, Config{InstanceID: "i-1", VolumeID: "vol-data", Device: "/dev/sdf", Poll: time.Millisecond, Timeout: 5 * time.Second, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	return d, f, &out
}

func TestListAndCreate(t *testing.T) {
	t.Parallel()
	d, _, _ := setup(t)
	ctx := context.Background()
	s, err := d.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.State != "pending" || s.Source != "vol-data" {
		t.Fatalf("created %+v", s)
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	if diff := cmp.Diff([]string{"snap-old", s.ID}, ids); diff != "" {
		t.Fatalf("list (-want +got):\n%s", diff)
	}
}

func TestRestoreSwapsVolume(t *testing.T) {
	t.Parallel()
	d, f, out := setup(t)
	if err := d.Restore(context.Background(), "snap-old", snapshot.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"StopInstances", "CreateVolume", "DetachVolume", "AttachVolume", "StartInstances"}
	if diff := cmp.Diff(want, f.actions); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if d.VolumeID() == "vol-data" || f.attach[d.VolumeID()] != "/dev/sdf" || f.volumes["vol-data"] != "available" {
		t.Fatalf("after restore: volume %s, attachments %v, volumes %v", d.VolumeID(), f.attach, f.volumes)
	}
	for _, step := range []string{"stopping instance i-1", "creating a volume from snap-old in eu-west-1b", "detaching vol-data", "attaching " + d.VolumeID(), "starting instance i-1"} {
		if !strings.Contains(out.String(), step) {
			t.Errorf("output lacks %q:\n%s", step, out)
		}
	}
}

func TestRestoreRefusesPending(t *testing.T) {
	t.Parallel()
	d, f, _ := setup(t)
	s, _ := d.Create(context.Background(), snapshot.CreateOptions{})
	if err := d.Restore(context.Background(), s.ID, snapshot.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "pending") {
		t.Fatalf("restore of a pending snapshot: %v", err)
	}
	if err := d.Restore(context.Background(), "snap-nope", snapshot.RestoreOptions{}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("restore of an unknown snapshot: %v", err)
	}
	if len(f.actions) != 1 { // CreateSnapshot only: nothing stopped
		t.Fatalf("actions %v", f.actions)
	}
}
