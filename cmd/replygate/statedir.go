package main

import (
	"fmt"
	"os"
)

// checkStateDir runs before anything is opened in the state directory,
// so that a start that cannot work stops with one line naming the
// directory, not with the SQLite driver's "attempt to write a readonly
// database" or a half-started daemon.
//
// A directory every user may write is refused: another user could plant
// a symbolic link where SQLite creates its -wal and -shm files, or put a
// socket of theirs where the CLI looks for api.sock and read its token.
// The store (0600), the API socket (0600) and the directory replygate
// creates (0700) are private already; this catches a directory made
// elsewhere with the wrong mode.
func checkStateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s: not a directory", dir)
	}
	if mode := fi.Mode().Perm(); mode&0o002 != 0 {
		return fmt.Errorf("state directory %s: every user may write it (mode %04o); chmod 0700 it", dir, mode)
	}
	f, err := os.CreateTemp(dir, ".replygate-write-test-*")
	if err != nil {
		return fmt.Errorf("state directory %s: not writable by uid %d: %w", dir, os.Getuid(), err)
	}
	f.Close()
	return os.Remove(f.Name())
}
