package ssmtest

import (
	"encoding/xml"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EBS: volumes, snapshots, attachments, StopInstances, and the group's
// Standby, as far as a snapshot restore uses them. States move one step
// per Describe, as EC2's do over seconds, so callers must wait for them.

// Volume is one EBS volume of the fake.
type Volume struct {
	ID    string
	AZ    string // "" is us-east-1a
	Size  int    // GiB; 0 is 8
	State string // creating, available, in-use; "" is available, or in-use when attached
	// Instance and Device are its attachment, "" when detached.
	Instance, Device string
	Snapshot         string // the snapshot it was created from
	Encrypted        bool
	Type             string
	Tags             map[string]string
}

// Snapshot is one EBS snapshot of the fake.
type Snapshot struct {
	ID, Volume string
	State      string // pending, completed, error; "" is completed
	Start      time.Time
	Size       int // GiB; 0 is 8
	Tags       map[string]string
}

// ebsState is the fake's EBS world; guarded by Server.mu.
type ebsState struct {
	volumes   map[string]*Volume
	snapshots []*Snapshot
	stopping  map[string]bool // instances StopInstances is stopping
	standby   map[string]bool // group instances in Standby
	next      int
}

func (s *Server) ebsInit(vols []Volume, snaps []Snapshot) {
	s.ebs = &ebsState{volumes: map[string]*Volume{}, stopping: map[string]bool{}, standby: map[string]bool{}}
	for _, v := range vols {
		v := v
		v.Tags = maps.Clone(v.Tags)
		if v.State == "" {
			v.State = "available"
			if v.Instance != "" {
				v.State = "in-use"
			}
		}
		s.ebs.volumes[v.ID] = &v
	}
	for _, sn := range snaps {
		sn := sn
		sn.Tags = maps.Clone(sn.Tags)
		if sn.State == "" {
			sn.State = "completed"
		}
		s.ebs.snapshots = append(s.ebs.snapshots, &sn)
	}
}

// Volumes returns the fake's volumes, by ID.
func (s *Server) Volumes() map[string]Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Volume{}
	for id, v := range s.ebs.volumes {
		out[id] = *v
	}
	return out
}

// InStandby tells whether a group instance is in Standby.
func (s *Server) InStandby(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ebs.standby[id]
}

type ebsTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func ebsTags(m map[string]string) []ebsTag {
	var out []ebsTag
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, ebsTag{k, m[k]})
	}
	return out
}

// ec2Filters reads Filter.N.Name / Filter.N.Value.M.
func ec2Filters(form url.Values) map[string][]string {
	f := map[string][]string{}
	for i := 1; form.Has("Filter." + strconv.Itoa(i) + ".Name"); i++ {
		p := "Filter." + strconv.Itoa(i)
		f[form.Get(p+".Name")] = listParam(form, p+".Value")
	}
	return f
}

// tagSpecs reads the tags of TagSpecification.N for resource type rt.
func tagSpecs(form url.Values, rt string) map[string]string {
	tags := map[string]string{}
	for i := 1; form.Has("TagSpecification." + strconv.Itoa(i) + ".ResourceType"); i++ {
		p := "TagSpecification." + strconv.Itoa(i)
		if form.Get(p+".ResourceType") != rt {
			continue
		}
		for j := 1; form.Has(p + ".Tag." + strconv.Itoa(j) + ".Key"); j++ {
			q := p + ".Tag." + strconv.Itoa(j)
			tags[form.Get(q+".Key")] = form.Get(q + ".Value")
		}
	}
	return tags
}

// serveEBS answers the EBS actions; false when op is not one of them.
// s.mu is held.
func (s *Server) serveEBS(w http.ResponseWriter, op string, form url.Values) bool {
	switch op {
	case "DescribeSnapshots":
		s.describeSnapshots(w, form)
	case "DescribeVolumes":
		s.describeVolumes(w, form)
	case "CreateVolume":
		s.createVolume(w, form)
	case "AttachVolume", "DetachVolume":
		s.attachVolume(w, op, form)
	case "StopInstances":
		s.stopInstances(w, form)
	default:
		return false
	}
	return true
}

func (s *Server) describeSnapshots(w http.ResponseWriter, form url.Values) {
	type snap struct {
		ID        string   `xml:"snapshotId"`
		Volume    string   `xml:"volumeId"`
		State     string   `xml:"status"`
		Start     string   `xml:"startTime"`
		Size      int      `xml:"volumeSize"`
		Encrypted bool     `xml:"encrypted"`
		Owner     string   `xml:"ownerId"`
		Tags      []ebsTag `xml:"tagSet>item"`
	}
	ids := listParam(form, "SnapshotId")
	for _, id := range ids {
		if !slices.ContainsFunc(s.ebs.snapshots, func(sn *Snapshot) bool { return sn.ID == id }) {
			s.ec2Error(w, &Error{400, "InvalidSnapshot.NotFound", "The snapshot '" + id + "' does not exist."})
			return
		}
	}
	filters := ec2Filters(form)
	var out []snap
	for _, sn := range s.ebs.snapshots {
		if len(ids) > 0 && !slices.Contains(ids, sn.ID) || !s.tagsMatch(w, filters, sn.Tags, nil) {
			continue
		}
		if sn.State == "pending" {
			defer func() { sn.State = "completed" }() // done by the next call
		}
		out = append(out, snap{sn.ID, sn.Volume, sn.State, sn.Start.UTC().Format(time.RFC3339), max(sn.Size, 8), true, "123456789012", ebsTags(sn.Tags)})
	}
	s.ec2Reply(w, struct {
		XMLName   xml.Name `xml:"DescribeSnapshotsResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		Snapshots []snap   `xml:"snapshotSet>item"`
	}{Xmlns: ec2Namespace, RequestID: "00000000-0000-4000-8000-000000000010", Snapshots: out})
}

// tagsMatch applies the tag:K filters, and any other filter other says
// how (nil: the filter is invalid, which fails the request).
func (s *Server) tagsMatch(w http.ResponseWriter, filters map[string][]string, tags map[string]string, other func(name string, values []string) (match, ok bool)) bool {
	for name, values := range filters {
		if k, ok := strings.CutPrefix(name, "tag:"); ok {
			v, has := tags[k]
			if !has || !slices.Contains(values, v) {
				return false
			}
			continue
		}
		if other == nil {
			s.t.Errorf("EC2 filter %q not supported by the fake", name)
			return false
		}
		m, ok := other(name, values)
		if !ok {
			s.t.Errorf("EC2 filter %q not supported by the fake", name)
		}
		if !m {
			return false
		}
	}
	return true
}

func (s *Server) describeVolumes(w http.ResponseWriter, form url.Values) {
	type attachment struct {
		Volume   string `xml:"volumeId"`
		Instance string `xml:"instanceId"`
		Device   string `xml:"device"`
		State    string `xml:"status"`
	}
	type vol struct {
		ID          string       `xml:"volumeId"`
		Size        int          `xml:"size"`
		Snapshot    string       `xml:"snapshotId"`
		AZ          string       `xml:"availabilityZone"`
		State       string       `xml:"status"`
		Encrypted   bool         `xml:"encrypted"`
		Type        string       `xml:"volumeType"`
		Attachments []attachment `xml:"attachmentSet>item"`
		Tags        []ebsTag     `xml:"tagSet>item"`
	}
	ids := listParam(form, "VolumeId")
	for _, id := range ids {
		if s.ebs.volumes[id] == nil {
			s.ec2Error(w, &Error{400, "InvalidVolume.NotFound", "The volume '" + id + "' does not exist."})
			return
		}
	}
	filters := ec2Filters(form)
	var out []vol
	for _, id := range slices.Sorted(maps.Keys(s.ebs.volumes)) {
		v := s.ebs.volumes[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		if !s.tagsMatch(w, filters, v.Tags, func(name string, values []string) (bool, bool) {
			switch name {
			case "volume-id":
				return slices.Contains(values, v.ID), true
			case "attachment.instance-id":
				return slices.Contains(values, v.Instance), true
			case "attachment.device":
				return slices.Contains(values, v.Device), true
			case "status":
				return slices.Contains(values, v.State), true
			}
			return false, false
		}) {
			continue
		}
		x := vol{ID: v.ID, Size: max(v.Size, 8), Snapshot: v.Snapshot, AZ: cmpOr(v.AZ, "us-east-1a"), State: v.State, Encrypted: v.Encrypted, Type: cmpOr(v.Type, "gp3"), Tags: ebsTags(v.Tags)}
		if v.Instance != "" {
			x.Attachments = []attachment{{v.ID, v.Instance, v.Device, "attached"}}
		}
		out = append(out, x)
		// One step further by the next call.
		switch v.State {
		case "creating":
			v.State = "available"
		case "detaching":
			v.State, v.Instance, v.Device = "available", "", ""
		case "attaching":
			v.State = "in-use"
		}
	}
	s.ec2Reply(w, struct {
		XMLName   xml.Name `xml:"DescribeVolumesResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		Volumes   []vol    `xml:"volumeSet>item"`
	}{Xmlns: ec2Namespace, RequestID: "00000000-0000-4000-8000-000000000011", Volumes: out})
}

func (s *Server) createVolume(w http.ResponseWriter, form url.Values) {
	snapID, az := form.Get("SnapshotId"), form.Get("AvailabilityZone")
	if az == "" {
		s.ec2Error(w, &Error{400, "MissingParameter", "The request must contain the parameter AvailabilityZone"})
		return
	}
	size := 8
	if snapID != "" {
		i := slices.IndexFunc(s.ebs.snapshots, func(sn *Snapshot) bool { return sn.ID == snapID })
		if i < 0 {
			s.ec2Error(w, &Error{400, "InvalidSnapshot.NotFound", "The snapshot '" + snapID + "' does not exist."})
			return
		}
		if s.ebs.snapshots[i].State != "completed" {
			s.ec2Error(w, &Error{400, "IncorrectState", "Snapshot '" + snapID + "' is not 'completed'."})
			return
		}
		size = max(s.ebs.snapshots[i].Size, 8)
	}
	if n, err := strconv.Atoi(form.Get("Size")); err == nil {
		if n < size {
			s.ec2Error(w, &Error{400, "InvalidParameterValue", "Volume of " + form.Get("Size") + "GiB is smaller than snapshot " + snapID})
			return
		}
		size = n
	}
	s.ebs.next++
	v := &Volume{ID: fmt.Sprintf("vol-0new%013d", s.ebs.next), AZ: az, Size: size, State: "creating", Snapshot: snapID,
		Encrypted: form.Get("Encrypted") == "true", Type: cmpOr(form.Get("VolumeType"), "gp2"), Tags: tagSpecs(form, "volume")}
	s.ebs.volumes[v.ID] = v
	s.ec2Reply(w, struct {
		XMLName   xml.Name `xml:"CreateVolumeResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		ID        string   `xml:"volumeId"`
		Size      int      `xml:"size"`
		Snapshot  string   `xml:"snapshotId"`
		AZ        string   `xml:"availabilityZone"`
		State     string   `xml:"status"`
		Encrypted bool     `xml:"encrypted"`
		Type      string   `xml:"volumeType"`
	}{Xmlns: ec2Namespace, RequestID: "00000000-0000-4000-8000-000000000012", ID: v.ID, Size: v.Size, Snapshot: snapID, AZ: az, State: v.State, Encrypted: v.Encrypted, Type: v.Type})
}

// attachVolume answers AttachVolume and DetachVolume with EC2's rules:
// attach an available volume of the instance's zone to a free device;
// detach a volume from a stopped instance (a running one could lose
// writes: the fake demands the caller stopped it first).
func (s *Server) attachVolume(w http.ResponseWriter, op string, form url.Values) {
	id, instID, dev := form.Get("VolumeId"), form.Get("InstanceId"), form.Get("Device")
	v := s.ebs.volumes[id]
	if v == nil {
		s.ec2Error(w, &Error{400, "InvalidVolume.NotFound", "The volume '" + id + "' does not exist."})
		return
	}
	inst := s.instances[cmpOr(instID, v.Instance)]
	if inst == nil {
		s.ec2Error(w, notFound(instID))
		return
	}
	state := "attaching"
	if op == "AttachVolume" {
		if v.State != "available" {
			s.ec2Error(w, &Error{400, "IncorrectState", "vol '" + id + "' is not 'available'."})
			return
		}
		if cmpOr(v.AZ, "us-east-1a") != cmpOr(inst.AZ, "us-east-1a") {
			s.ec2Error(w, &Error{400, "InvalidVolume.ZoneMismatch", "The volume '" + id + "' is not in the same availability zone as instance '" + inst.ID + "'"})
			return
		}
		for _, o := range s.ebs.volumes {
			if o.Instance == inst.ID && o.Device == dev {
				s.ec2Error(w, &Error{400, "InvalidParameterValue", "Invalid value '" + dev + "' for unixDevice. Attachment point " + dev + " is already in use"})
				return
			}
		}
		v.State, v.Instance, v.Device = "attaching", inst.ID, dev
	} else {
		if v.State != "in-use" || instID != "" && v.Instance != instID {
			s.ec2Error(w, &Error{400, "IncorrectState", "Volume '" + id + "' is in the 'available' state."})
			return
		}
		if inst.State != "stopped" {
			s.t.Errorf("DetachVolume %s from instance %s while it is %s", id, inst.ID, inst.State)
		}
		state, dev = "detaching", v.Device
		v.State = "detaching"
	}
	s.ec2Reply(w, struct {
		XMLName   xml.Name `xml:"Response"`
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		Volume    string   `xml:"volumeId"`
		Instance  string   `xml:"instanceId"`
		Device    string   `xml:"device"`
		State     string   `xml:"status"`
	}{xml.Name{Local: op + "Response"}, ec2Namespace, "00000000-0000-4000-8000-000000000013", id, inst.ID, dev, state})
}

// stopInstances stops instances: stopping, then stopped by the next
// DescribeInstances. Stopping an instance the group holds InService fails
// the test: the group would find it unhealthy and replace it.
func (s *Server) stopInstances(w http.ResponseWriter, form url.Values) {
	s.changeStates(w, form, "StopInstances", "00000000-0000-4000-8000-000000000014", func(id string, inst *Instance) *Error {
		if g := s.group; g != nil && slices.Contains(g.InService, id) && !s.ebs.standby[id] {
			s.t.Errorf("StopInstances %s while it is InService in group %s: the group would replace it (enter Standby first)", id, g.Name)
		}
		if inst.State == "running" || inst.State == "pending" {
			inst.State = "stopping"
			inst.Ping = "ConnectionLost"
			s.ebs.stopping[id] = true
		}
		return nil
	})
}

// ebsStep moves instances StopInstances stopped one step, after a
// DescribeInstances answer. s.mu is held.
func (s *Server) ebsStep() {
	for id := range s.ebs.stopping {
		if inst := s.instances[id]; inst.State == "stopping" {
			inst.State = "stopped"
		}
		delete(s.ebs.stopping, id)
	}
}

// standby answers EnterStandby and ExitStandby; false when op is neither.
// s.mu is held.
func (s *Server) standby(w http.ResponseWriter, op string, form url.Values) bool {
	if op != "EnterStandby" && op != "ExitStandby" {
		return false
	}
	g := s.group
	type activity struct {
		ID          string `xml:"ActivityId"`
		Group       string `xml:"AutoScalingGroupName"`
		Description string `xml:"Description"`
		Status      string `xml:"StatusCode"`
	}
	var acts []activity
	for _, id := range listParam(form, "InstanceIds.member") {
		if !slices.Contains(g.InService, id) || (op == "EnterStandby") == s.ebs.standby[id] {
			want := "InService"
			if op == "ExitStandby" {
				want = "Standby"
			}
			asgError(w, &Error{400, "ValidationError", "The instance " + id + " is not in " + want + "."})
			return true
		}
		if op == "EnterStandby" {
			if form.Get("ShouldDecrementDesiredCapacity") == "" {
				asgError(w, &Error{400, "ValidationError", "ShouldDecrementDesiredCapacity is required"})
				return true
			}
			if form.Get("ShouldDecrementDesiredCapacity") != "true" {
				s.t.Errorf("EnterStandby %s without decrementing the desired capacity: the group would launch a replacement", id)
			}
			s.ebs.standby[id] = true
			g.Desired--
			acts = append(acts, activity{"a-" + id, g.Name, "Moving EC2 instance to Standby: " + id, "InProgress"})
		} else {
			delete(s.ebs.standby, id)
			g.Desired++
			acts = append(acts, activity{"a-" + id, g.Name, "Moving EC2 instance out of Standby: " + id, "PreInService"})
		}
	}
	s.asgReply(w, op, struct {
		XMLName    xml.Name   `xml:"Result"`
		Activities []activity `xml:"Activities>member"`
	}{Activities: acts})
	return true
}
