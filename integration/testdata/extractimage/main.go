// Command extractimage runs machines.InspectImage and machines.ExtractImage on a disk image, for the integration
// tests of extension images (they need systemd-dissect v257 and loop devices, which the test host has).
//
//	extractimage [-class sysext] [-max-entries N] [-max-bytes N] IMAGE DIR
//
// It prints the image's integrity ("integrity: ...") and, when the extraction succeeded, "extracted"; on an
// error it prints the error to standard error and exits 1 (2 for ErrImageTooLarge).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/bitbuilder/bitbuilder/machines"
)

func main() {
	class := flag.String("class", machines.ClassSysext, "sysext or confext")
	entries := flag.Int("max-entries", 0, "ImageLimits.MaxEntries")
	bytes := flag.Int64("max-bytes", 0, "ImageLimits.MaxBytes")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: extractimage [-class C] [-max-entries N] [-max-bytes N] IMAGE DIR")
		os.Exit(1)
	}
	ctx := context.Background()
	info, err := machines.InspectImage(ctx, "", flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("integrity:", info.Integrity())
	if why := machines.CheckExtensionImage(info, *class); why != "" {
		fmt.Fprintln(os.Stderr, why)
		os.Exit(1)
	}
	err = machines.ExtractImage(ctx, "", flag.Arg(0), flag.Arg(1), *class, machines.ImageLimits{MaxEntries: *entries, MaxBytes: *bytes})
	if errors.Is(err, machines.ErrImageTooLarge) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("extracted")
}
