#!/usr/bin/env python3
"""zero-blob.py SIZE PARENT OBJECTS_DIR: a commit (on PARENT) whose tree holds
one file, `big`, of SIZE zero bytes, written as a pack and its index into
OBJECTS_DIR/pack, without ever holding or deflating SIZE bytes: the zlib
stream of the zeros is one flushed segment of a MiB of zeros, repeated (after
a full flush, deflate starts afresh, so the segments are identical), with the
checksum computed for the whole. Prints the commit's id.

A hostile agent's tool (a gigabyte-sized blob in a pack of a few MB), and the
tests' way to make one cheaply. SIZE must be a multiple of 1 MiB; the blob id
of 1 GiB of zeros is known, other sizes are hashed (a second per GiB)."""
import hashlib, os, struct, sys, zlib

MIB = 1 << 20
KNOWN = {1 << 30: "4fce05a4e4ed8cefef2d99f32c519b2fd7841b74"}


def blob_id(size):
    if size in KNOWN:
        return KNOWN[size]
    h = hashlib.sha1(b"blob %d\0" % size)
    z = bytes(MIB)
    for _ in range(size // MIB):
        h.update(z)
    return h.hexdigest()


def obj_header(kind, size):
    c = (kind << 4) | (size & 15)
    size >>= 4
    out = bytearray()
    while size:
        out.append(c | 0x80)
        c = size & 0x7F
        size >>= 7
    out.append(c)
    return bytes(out)


def zeros_stream(size):
    """Chunks of the zlib stream of `size` zero bytes."""
    c = zlib.compressobj(1)
    z = bytes(MIB)
    first = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
    yield first
    seg = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
    for _ in range(size // MIB - 1):
        yield seg
    end = c.flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(size // MIB):
        adler = zlib.adler32(z, adler)
    yield end[:-4] + struct.pack(">I", adler)


def main():
    size, parent, objects = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    assert size % MIB == 0 and size > 0, "SIZE must be a positive multiple of 1 MiB"
    blob = blob_id(size)
    tree_body = b"100644 big\0" + bytes.fromhex(blob)
    tree = hashlib.sha1(b"tree %d\0" % len(tree_body) + tree_body).hexdigest()
    who = b"A U Thor <author@example.com> 0 +0000"
    commit_body = (b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\nbig\n"
                   % (tree.encode(), parent.encode(), who, who))
    commit = hashlib.sha1(b"commit %d\0" % len(commit_body) + commit_body).hexdigest()

    pack_dir = os.path.join(objects, "pack")
    os.makedirs(pack_dir, exist_ok=True)
    tmp = os.path.join(pack_dir, "tmp-zero-blob.pack")
    h = hashlib.sha1()
    entries = []  # (id, offset, crc)
    with open(tmp, "wb") as f:
        def put(data, crc):
            h.update(data)
            f.write(data)
            return zlib.crc32(data, crc)
        put(b"PACK" + struct.pack(">II", 2, 3), 0)
        for oid, kind, body, n in [
            (blob, 3, None, size),
            (tree, 2, tree_body, len(tree_body)),
            (commit, 1, commit_body, len(commit_body)),
        ]:
            start = f.tell()
            crc = put(obj_header(kind, n), 0)
            if body is None:
                for chunk in zeros_stream(size):
                    crc = put(chunk, crc)
            else:
                crc = put(zlib.compress(body), crc)
            entries.append((oid, start, crc & 0xFFFFFFFF))
        digest = h.digest()
        f.write(digest)
    name = os.path.join(pack_dir, "pack-" + digest.hex())
    entries.sort()
    idx = bytearray(b"\377tOc" + struct.pack(">I", 2))
    for b in range(256):
        idx += struct.pack(">I", sum(1 for e in entries if int(e[0][:2], 16) <= b))
    for e in entries:
        idx += bytes.fromhex(e[0])
    for e in entries:
        idx += struct.pack(">I", e[2])
    for e in entries:
        idx += struct.pack(">I", e[1])
    idx += digest
    idx += hashlib.sha1(idx).digest()
    os.rename(tmp, name + ".pack")
    with open(name + ".idx", "wb") as f:
        f.write(idx)
    print(commit)


main()
