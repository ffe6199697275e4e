package mtalab

import (
	"errors"
	"os"
)

// NewPostfix is StartPostfix for programs that are not tests (the
// benchmark harness in contrib/bench): it returns an error where
// StartPostfix skips or fails the test, and the caller stops the instance
// (Stop) and removes its directory (p.Dir).
func NewPostfix(cfg PostfixConfig) (*Postfix, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("mtalab: a private Postfix instance needs root")
	}
	p, err := newPostfix(cfg)
	if err != nil {
		if p != nil {
			p.Stop()
			os.RemoveAll(p.Dir)
		}
		return nil, err
	}
	return p, nil
}
