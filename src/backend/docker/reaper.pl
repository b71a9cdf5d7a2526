# flocks-reaper: one attempt's agent inside a container, and everything it
# starts. Run as root: `perl -e REAPER -- <user> <grace secs> <program> <args>...`
# with FLOCKS_UNSET naming variables to remove. `<grace secs>` = "probe":
# only check that it can be the subreaper and become <user> (exit 0). Protocol on stdin (the exec's
# attached stream, which flocks holds open for the whole attempt):
#   "<n>\n" then n bytes: the prompt, given to the agent on its stdin;
#   then lines "TERM" (stop gracefully) or "KILL" (stop now);
#   end of stream: flocks is gone (killed, crashed, lost): stop gracefully.
# It makes itself the child subreaper (prctl PR_SET_CHILD_SUBREAPER), so that
# every descendant, through setsid, double forks and stripped environments,
# reparents to it; it runs the agent as <user>, which cannot signal it; when
# the agent exits or it is told to stop, it stops every descendant (TERM,
# grace, KILL) and exits with the agent's status once none is left.
use strict;
use warnings;
use POSIX ();

$| = 1;
my ($user, $grace, @cmd) = @ARGV;
sub say_err { print STDERR "flocks-reaper: @_\n" }

# PR_SET_CHILD_SUBREAPER = 36; prctl's number by architecture.
my %prctl = (x86_64 => 157, aarch64 => 167, riscv64 => 167, loongarch64 => 167,
             armv7l => 172, armv6l => 172, i686 => 172, i386 => 172,
             ppc64le => 171, ppc64 => 171, s390x => 172);
my $arch = (POSIX::uname())[4];
unless (exists $prctl{$arch} && syscall($prctl{$arch}, 36, 1, 0, 0, 0) == 0) {
    say_err("cannot become the subreaper on $arch: $!");
    exit 125;
}

# Who the agent runs as: uid[:gid] or name[:group].
my ($u, $g) = split /:/, $user, 2;
my ($uid, $gid, $home, $name);
if ($u =~ /^\d+$/) {
    $uid = $u;
    my @pw = getpwuid($uid);
    ($name, $gid, $home) = @pw ? ($pw[0], $pw[3], $pw[7]) : (undef, $uid, "/");
} else {
    my @pw = getpwnam($u) or do { say_err("no user $u in the container"); exit 125 };
    ($name, $uid, $gid, $home) = ($pw[0], $pw[2], $pw[3], $pw[7]);
}
if (defined $g) {
    $gid = $g =~ /^\d+$/ ? $g : (getgrnam($g))[2];
    defined $gid or do { say_err("no group $g in the container"); exit 125 };
}

# In a child: become the agent's user for good.
sub become {
    $) = "$gid $gid";
    $( = $gid;
    POSIX::setuid($uid);
    if ($< != $uid || $> != $uid || $( != $gid) {
        say_err("cannot become $user (uid $uid, gid $gid): $!");
        POSIX::_exit(125);
    }
}

if ($grace eq 'probe') {
    my $pid = fork();
    defined $pid or exit 125;
    if ($pid == 0) { become(); POSIX::_exit(0) }
    waitpid($pid, 0);
    exit($? >> 8);
}

sub readn {
    my ($n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $got = sysread(STDIN, $buf, $n - length($buf), length($buf));
        return undef unless $got;
    }
    return $buf;
}
my $len = '';
while (1) {
    my $c = readn(1);
    defined $c or exit 0;    # flocks went away before the prompt
    last if $c eq "\n";
    $len .= $c;
}
$len =~ /^\d+$/ or do { say_err("bad prompt header"); exit 125 };
my $prompt = readn($len);
defined $prompt or exit 0;

pipe(my $r, my $w) or do { say_err("pipe: $!"); exit 125 };
my $agent = fork();
defined $agent or do { say_err("fork: $!"); exit 125 };
if ($agent == 0) {
    close $w;
    POSIX::dup2(fileno($r), 0) if fileno($r) != 0;
    become();
    delete $ENV{$_} for split ' ', ($ENV{FLOCKS_UNSET} // '');
    delete $ENV{FLOCKS_UNSET};
    # The exec ran as root: HOME is root's, unless the config set one.
    $ENV{HOME} = $home unless $ENV{FLOCKS_KEEP_HOME};
    delete $ENV{FLOCKS_KEEP_HOME};
    if (defined $name) { $ENV{USER} = $name; $ENV{LOGNAME} = $name; }
    { no warnings 'exec'; exec { $cmd[0] } @cmd; }
    say_err("cannot run $cmd[0]: $!");
    POSIX::_exit(127);
}
close $r;
my $writer = fork();
if (defined $writer && $writer == 0) {
    $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $prompt) {
        my $n = syswrite($w, $prompt, length($prompt) - $off, $off);
        last unless $n;
        $off += $n;
    }
    POSIX::_exit(0);
}
close $w;

my $status;    # the agent's wait status, once reaped
sub reap {
    while ((my $p = waitpid(-1, POSIX::WNOHANG())) > 0) {
        $status = $? if $p == $agent;
    }
}

# Every live descendant (they all reparent here).
sub descendants {
    my %kids;
    opendir(my $d, "/proc") or return ();
    for my $p (grep { /^\d+$/ } readdir $d) {
        open(my $f, '<', "/proc/$p/stat") or next;
        my $st = <$f>;
        close $f;
        defined $st && $st =~ /\)\s+(\S)\s+(\d+)/ or next;
        next if $1 eq 'Z' || $1 eq 'X';
        push @{ $kids{$2} }, $p;
    }
    closedir $d;
    my @out;
    my @todo = ($$);
    while (@todo) {
        my $p = shift @todo;
        for my $c (@{ $kids{$p} || [] }) { push @out, $c; push @todo, $c; }
    }
    return @out;
}

my $stopped = 0;
sub stop_all {
    my ($secs) = @_;
    my @left = descendants();
    return unless @left;
    $stopped += @left;
    kill 'TERM', @left;
    my $deadline = time + $secs;
    while (time < $deadline) {
        reap();
        @left = descendants();
        return unless @left;
        select(undef, undef, undef, 0.1);
    }
    for (1 .. 100) {
        @left = descendants();
        last unless @left;
        kill 'KILL', @left;
        select(undef, undef, undef, 0.05);
        reap();
    }
    say_err("could not stop: @left") if @left;
}

my $gone = 0;
my $inbuf = '';
while (1) {
    reap();
    if (defined $status) {
        # The agent exited: stop what it left running.
        my $before = $stopped;
        stop_all($grace);
        say_err("the agent exited; stopped " . ($stopped - $before) . " process(es) it left running")
            if $stopped > $before;
        last;
    }
    my $rin = '';
    vec($rin, 0, 1) = 1 unless $gone;
    my $ready = select(my $rout = $rin, undef, undef, 0.2);
    next unless !$gone && $ready && $ready > 0;
    my $got = sysread(STDIN, $inbuf, 4096, length $inbuf);
    if (!$got) {
        $gone = 1;
        say_err("flocks went away: stopping the agent");
        stop_all($grace);
        next;
    }
    while ($inbuf =~ s/^([^\n]*)\n//) {
        if ($1 eq 'TERM') { stop_all($grace) }
        elsif ($1 eq 'KILL') { stop_all(0) }
    }
}
reap();
exit(($status & 127) ? 128 + ($status & 127) : ($status >> 8));
