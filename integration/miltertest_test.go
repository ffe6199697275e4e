package integration

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// miltertestConfig names the robots testdata/replygate.lua sends as.
const miltertestConfig = `
[policy]
machine_senders = ["jenkins@example.test"]
machine_logins = ["ci-bot"]
`

// TestMiltertest runs testdata/replygate.lua under miltertest (the
// libmilter-based test driver from OpenDKIM) against the binary: a robot's
// message is stamped and accepted, a person's is not stamped, over one
// milter connection. The script is run a second time with its stamp
// expectations flipped and must then fail, so a script that cannot fail
// does not pass for a working milter.
func TestMiltertest(t *testing.T) {
	t.Parallel()
	mtalab.Need(t, "miltertest")
	rg := startReplygate(t, miltertestConfig)
	_, port, err := net.SplitHostPort(rg.Milter)
	if err != nil {
		t.Fatal(err)
	}

	run := func(extra ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"-D", "port=" + port}, extra...)
		args = append(args, "-s", "testdata/replygate.lua")
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, "miltertest", args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}

	out, err := run()
	if err != nil {
		t.Fatalf("miltertest replygate.lua: %v\n%s\nreplygate log:\n%s", err, out, rg.Log())
	}
	if !strings.Contains(out, "PASS") {
		t.Errorf("miltertest replygate.lua exited 0 without PASS:\n%s", out)
	}
	verdicts := rg.Verdicts(t, 3, 10*time.Second)
	if len(verdicts) != 3 {
		t.Fatalf("%d verdict lines, want 3\n%s", len(verdicts), rg.Log())
	}
	for i, want := range []struct {
		id, from string
		stamp    bool
	}{
		{"QID1", "jenkins@example.test", true},
		{"QID2", "alice@example.test", false},
		{"QID3", "builds@example.test", true},
	} {
		if v := verdicts[i]; v["queue_id"] != want.id || v["mail_from"] != want.from || v["stamp"] != want.stamp {
			t.Errorf("verdict %d = queue_id %v, mail_from %v, stamp %v; want %s, %s, %t",
				i+1, v["queue_id"], v["mail_from"], v["stamp"], want.id, want.from, want.stamp)
		}
	}

	out, err = run("-D", "invert=1")
	if err == nil {
		t.Fatalf("miltertest replygate.lua with flipped expectations exited 0, want a failure:\n%s", out)
	}
	if !strings.Contains(out, "FAIL: robot-originating: X-Allow-Auto-Reply was added") {
		t.Errorf("flipped run failed for another reason than the first stamp (%v):\n%s", err, out)
	}
}
