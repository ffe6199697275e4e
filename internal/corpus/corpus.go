// Package corpus reads testdata/messages: each NAME.eml with the envelope
// it arrived with and the verdict a person expects (NAME.case.json). The
// policy, milter and check tests all judge the same corpus through it.
package corpus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Case is NAME.case.json.
type Case struct {
	Envelope Envelope `json:"envelope"`
	Want     Want     `json:"want"`
	Note     string   `json:"note"`
}

// Envelope is how the message reached the MTA.
type Envelope struct {
	MailFrom string              `json:"mail_from"` // "" is the null sender
	Rcpt     []string            `json:"rcpt"`
	Aliases  map[string][]string `json:"aliases"`
	Auth     string              `json:"auth"`
	ClientIP string              `json:"client_ip"`
	Daemon   string              `json:"daemon"`
	Local    bool                `json:"local"`
	Outbound bool                `json:"outbound"`
}

// Want is the hand-written expectation; the golden file is what the
// classifier says, and the expectation keeps it honest.
type Want struct {
	AutoReply    string   `json:"auto_reply"`
	Reasons      []string `json:"reasons"`
	Stamp        bool     `json:"stamp"`
	StampReasons []string `json:"stamp_reasons"`
}

// Message is one corpus entry.
type Message struct {
	Name   string // NAME
	EML    string // path of NAME.eml
	Golden string // path of NAME.golden.json
	Case   Case
}

// Load reads every message in dir, in name order.
func Load(dir string) ([]Message, error) {
	emls, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil || len(emls) == 0 {
		return nil, fmt.Errorf("no messages in %s (%v)", dir, err)
	}
	out := make([]Message, 0, len(emls))
	for _, eml := range emls {
		base := strings.TrimSuffix(eml, ".eml")
		m := Message{Name: filepath.Base(base), EML: eml, Golden: base + ".golden.json"}
		raw, err := os.ReadFile(base + ".case.json")
		if err != nil {
			return nil, fmt.Errorf("%s: every message needs a case file: %w", m.Name, err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m.Case); err != nil {
			return nil, fmt.Errorf("%s.case.json: %w", m.Name, err)
		}
		out = append(out, m)
	}
	return out, nil
}
