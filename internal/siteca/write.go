package siteca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WritePair writes a certificate (0644) and its key (0600). Each file is
// written to a temporary name and then moved into place, so a crash never
// leaves half a key. Without force it refuses, naming the file, when either
// exists, and writes neither.
func WritePair(certPath, keyPath string, certPEM, keyPEM []byte, force bool) error {
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists (force to replace it)", p)
			}
		}
	}
	// The key first: a certificate without its key is useless but harmless.
	if err := writeFile(keyPath, keyPEM, 0o600, force); err != nil {
		return err
	}
	return writeFile(certPath, certPEM, 0o644, force)
}

// writeFile writes data to path atomically with mode perm. Without force a
// hard link puts the file in place, which fails if path exists even when
// another process created it a moment ago; with force a rename replaces it.
func writeFile(path string, data []byte, perm os.FileMode, force bool) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600, so the key is never readable by others,
	// not even for an instant; Chmod then sets the mode regardless of umask.
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if force {
		return os.Rename(tmp, path)
	}
	err = os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists (force to replace it)", path)
	}
	if err != nil {
		// A file system without hard links: check, then rename. Only a
		// writer racing us in the same instant can slip between the two.
		if _, serr := os.Lstat(path); serr == nil {
			return fmt.Errorf("%s already exists (force to replace it)", path)
		}
		return os.Rename(tmp, path)
	}
	return os.Remove(tmp)
}
