//! One reading of an argv against the option tables: tokens as crun's `getopt_long` (and, where
//! crun would refuse a token, runc's urfave/cli) reads them, then the typed [`Invocation`].

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::lossy;
use super::options::{
    Key, Kind, Opt, Tables, ARGP_DEFAULTS, CHECKPOINT, CREATE, DELETE, EVENTS, EXEC, GLOBAL, KILL,
    PS, RESTORE, RUN_EXTRA, UPDATE,
};
use super::{
    ArgvError, Command, CreateArgs, DeleteArgs, ExecArgs, GlobalOpts, IdArgs, Invocation, KillArgs,
    LogFormat, RestoreArgs,
};
/// What follows the first positional of a subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterId {
    /// More flags and positionals (runc reorders flags to the front).
    Continue,
    /// Flags are an error, positionals are kept (and counted by the caller).
    RejectFlags,
    /// Not ours: the process's argv (exec) or ps's arguments.
    Stop,
}

#[derive(Debug, Clone, Copy)]
struct Ctx {
    /// Empty for the global flags.
    subcommand: &'static str,
    tables: Tables,
    /// Ambiguity is an error (intercepted subcommands).
    strict: bool,
    after_id: AfterId,
}

impl Ctx {
    fn global() -> Self {
        Ctx {
            subcommand: "",
            tables: &[GLOBAL],
            strict: false,
            after_id: AfterId::Stop,
        }
    }

    fn sub(subcommand: &'static str, tables: Tables, strict: bool, after_id: AfterId) -> Self {
        Ctx {
            subcommand,
            tables,
            strict,
            after_id,
        }
    }

    fn is_global(&self) -> bool {
        self.subcommand.is_empty()
    }

    fn opts(&self) -> impl Iterator<Item = &'static Opt> {
        let tables: Tables = self.tables;
        tables
            .iter()
            .flat_map(|t| t.iter())
            .chain(ARGP_DEFAULTS.iter())
    }

    fn short(&self, c: u8) -> Option<&'static Opt> {
        self.opts().find(|o| o.short == Some(c))
    }

    fn exact(&self, name: &[u8]) -> Option<&'static Opt> {
        self.opts()
            .find(|o| !o.long.is_empty() && o.long.as_bytes() == name)
    }

    /// getopt_long's lookup: an exact name, else a unique prefix. Prefixes of several options
    /// that mean the same thing to us (same key and kind) count as unique.
    fn long(&self, name: &[u8]) -> Lookup {
        if name.is_empty() {
            // `--=x`: getopt matches every option and reports ambiguity.
            return Lookup::Ambiguous;
        }
        if let Some(o) = self.exact(name) {
            return Lookup::Found(o);
        }
        let mut found: Option<&'static Opt> = None;
        for o in self.opts().filter(|o| o.long.as_bytes().starts_with(name)) {
            match found {
                None => found = Some(o),
                Some(f) if f.kind == o.kind && f.key == o.key => {}
                Some(_) => return Lookup::Ambiguous,
            }
        }
        found.map_or(Lookup::NotFound, Lookup::Found)
    }
}

#[derive(Debug)]
enum Lookup {
    Found(&'static Opt),
    Ambiguous,
    NotFound,
}

#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Switch(bool),
    Value(&'a OsStr),
}

/// One recognised option occurrence.
#[derive(Debug, Clone, Copy)]
struct Occ<'a> {
    opt: &'static Opt,
    val: Val<'a>,
    /// The token it came from (its value may be in the next one).
    index: usize,
}

impl<'a> Occ<'a> {
    fn switch(&self) -> bool {
        match self.val {
            Val::Switch(b) => b,
            // Not produced for switches; a value-taking option given a value is "set".
            Val::Value(_) => true,
        }
    }

    fn value(&self) -> Result<&'a OsStr, ArgvError> {
        match self.val {
            Val::Value(v) => Ok(v),
            // Not produced for value-taking options (the scanner always finds a value or fails).
            Val::Switch(_) => Err(ArgvError::MissingValue {
                flag: self.opt.display(),
            }),
        }
    }

    fn path(&self) -> Result<PathBuf, ArgvError> {
        let v = self.value()?;
        if v.is_empty() {
            // runc reads "" as "not given" and crun as a path that does not exist.
            return Err(ArgvError::BadValue {
                flag: self.opt.display(),
                value: String::new(),
                reason: "empty path",
            });
        }
        Ok(PathBuf::from(v))
    }

    fn string(&self) -> Result<String, ArgvError> {
        let v = self.value()?;
        v.to_str().map(str::to_owned).ok_or(ArgvError::NotUtf8 {
            what: self.opt.display(),
            index: self.index,
        })
    }

    /// `--preserve-fds`: decimal digits only. crun parses base 10, runc base 0 (`010` is 8,
    /// `0x10` is 16); digits-only leaves the leading-zero case, where crun (which runs) wins.
    fn count(&self) -> Result<u32, ArgvError> {
        let v = self.value()?;
        let bad = |reason| ArgvError::BadValue {
            flag: self.opt.display(),
            value: lossy(v),
            reason,
        };
        let bytes = v.as_bytes();
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected a decimal number"));
        }
        let n: u32 = v
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("number too large"))?;
        // crun rejects values beyond INT_MAX.
        if i32::try_from(n).is_err() {
            return Err(bad("number too large"));
        }
        Ok(n)
    }
}

#[derive(Debug)]
enum Item<'a> {
    Opt(Occ<'a>),
    Positional(usize),
    EndOfOptions,
}

/// An unknown bare flag read as a switch although a value could have followed.
#[derive(Debug)]
pub(super) struct Guess {
    pub(super) index: usize,
    pub(super) flag: String,
    pub(super) subcommand: &'static str,
}

/// A subcommand's tokens, sorted.
#[derive(Debug, Default)]
struct Scanned<'a> {
    opts: Vec<Occ<'a>>,
    positionals: Vec<usize>,
    help: bool,
}

/// One reading of the argv.
#[derive(Debug)]
pub(super) struct Pass<'a> {
    args: &'a [OsString],
    /// The token index of an unknown flag this reading takes as value-taking.
    forced: Option<usize>,
    guesses: Vec<Guess>,
    /// An ambiguity among the global flags, an error only if the command is intercepted.
    deferred: Option<String>,
}

impl<'a> Pass<'a> {
    pub(super) fn run(
        args: &'a [OsString],
        forced: Option<usize>,
    ) -> (Result<Invocation, ArgvError>, Vec<Guess>) {
        let mut pass = Pass {
            args,
            forced,
            guesses: Vec::new(),
            deferred: None,
        };
        let result = pass.invocation();
        (result, pass.guesses)
    }

    fn invocation(&mut self) -> Result<Invocation, ArgvError> {
        let mut global = GlobalOpts::default();
        let ctx = Ctx::global();
        let mut items = Vec::new();
        let mut i = 0;
        let mut sub = None;
        'tokens: while i < self.args.len() {
            items.clear();
            i = self.token(i, ctx, &mut items)?;
            for item in items.drain(..) {
                match item {
                    // Both runtimes take the word after `--` as the subcommand.
                    Item::EndOfOptions => {
                        sub = (i < self.args.len()).then_some(i);
                        break 'tokens;
                    }
                    Item::Positional(k) => {
                        sub = Some(k);
                        break 'tokens;
                    }
                    Item::Opt(o) => {
                        if let Some(command) = apply_global(&mut global, &o)? {
                            return Ok(Invocation {
                                global,
                                command,
                                subcommand_index: None,
                            });
                        }
                    }
                }
            }
        }
        let Some(k) = sub else {
            // runc and crun print usage when given no subcommand.
            return Ok(Invocation {
                global,
                command: Command::Help,
                subcommand_index: None,
            });
        };
        let command = self.command(k)?;
        if command.intercepted() {
            if let Some(flag) = self.deferred.take() {
                return Err(ArgvError::AmbiguousFlag {
                    flag,
                    subcommand: command.name().to_owned(),
                });
            }
        }
        Ok(Invocation {
            global,
            command,
            subcommand_index: Some(k),
        })
    }

    fn command(&mut self, k: usize) -> Result<Command, ArgvError> {
        use AfterId::{Continue, RejectFlags, Stop};
        let args: &'a [OsString] = self.args;
        let name = args[k].as_bytes();
        let first = k + 1;
        let command = match name {
            b"create" | b"run" => {
                let run = name == b"run";
                let (label, tables): (_, Tables) = if run {
                    ("run", &[CREATE, RUN_EXTRA])
                } else {
                    ("create", &[CREATE])
                };
                let s = self.scan(first, Ctx::sub(label, tables, true, Continue))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let args = self.create_args(label, &s)?;
                if run {
                    Command::Run(args)
                } else {
                    Command::Create(args)
                }
            }
            b"restore" => {
                let s = self.scan(first, Ctx::sub("restore", &[RESTORE], true, RejectFlags))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let mut r = RestoreArgs {
                    id: self.only_id("restore", &s.positionals)?,
                    ..RestoreArgs::default()
                };
                for o in &s.opts {
                    match o.opt.key {
                        Key::Bundle => r.bundle = o.path()?,
                        Key::ImagePath => r.image_path = Some(o.path()?),
                        _ => {}
                    }
                }
                Command::Restore(r)
            }
            b"exec" => {
                let s = self.scan(first, Ctx::sub("exec", &[EXEC], true, Stop))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let id_index = *s.positionals.first().ok_or(ArgvError::MissingId {
                    subcommand: "exec".into(),
                })?;
                let mut e = ExecArgs {
                    id: self.id(id_index)?,
                    id_index,
                    ..ExecArgs::default()
                };
                for o in &s.opts {
                    match o.opt.key {
                        Key::Process => e.process = Some(o.path()?),
                        Key::Cap => e.caps.push(o.string()?),
                        Key::Apparmor => e.apparmor = Some(o.string()?),
                        Key::NoNewPrivs => e.no_new_privs = o.switch(),
                        Key::Detach => e.detach = o.switch(),
                        Key::PidFile => e.pid_file = Some(o.path()?),
                        Key::ConsoleSocket => e.console_socket = Some(o.path()?),
                        Key::Tty => e.tty = o.switch(),
                        Key::Cwd => e.cwd = Some(o.path()?),
                        Key::Env => e.env.push(o.string()?),
                        Key::User => e.user = Some(o.string()?),
                        Key::AdditionalGids => e.additional_gids.push(o.string()?),
                        Key::PreserveFds => e.preserve_fds = Some(o.count()?),
                        _ => {}
                    }
                }
                e.args = self.args[id_index + 1..].to_vec();
                Command::Exec(e)
            }
            b"kill" => {
                let s = self.scan(first, Ctx::sub("kill", &[KILL], false, Continue))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let mut a = KillArgs {
                    id: self.first_id("kill", &s.positionals)?,
                    ..KillArgs::default()
                };
                if let Some(&sig) = s.positionals.get(1) {
                    a.signal = Some(self.utf8(sig, "signal")?);
                }
                for o in s.opts.iter().filter(|o| o.opt.key == Key::All) {
                    a.all = o.switch();
                }
                Command::Kill(a)
            }
            b"delete" => {
                let s = self.scan(first, Ctx::sub("delete", &[DELETE], false, Continue))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let mut d = DeleteArgs {
                    id: self.first_id("delete", &s.positionals)?,
                    force: false,
                };
                for o in s.opts.iter().filter(|o| o.opt.key == Key::Force) {
                    d.force = o.switch();
                }
                Command::Delete(d)
            }
            b"ps" => {
                let s = self.scan(first, Ctx::sub("ps", &[PS], false, Stop))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let id = self.first_id("ps", &s.positionals)?;
                let mut format = None;
                for o in s.opts.iter().filter(|o| o.opt.key == Key::Format) {
                    format = Some(o.string()?);
                }
                Command::Ps { id, format }
            }
            b"update" => {
                let s = self.scan(first, Ctx::sub("update", &[UPDATE], false, Continue))?;
                if s.help {
                    return Ok(Command::Help);
                }
                let id = self.first_id("update", &s.positionals)?;
                let mut resources = None;
                for o in s.opts.iter().filter(|o| o.opt.key == Key::Resources) {
                    resources = Some(o.string()?);
                }
                Command::Update { id, resources }
            }
            b"start" | b"state" | b"pause" | b"resume" | b"events" | b"checkpoint" => {
                let (label, table, wrap): (_, Tables, fn(IdArgs) -> Command) = match name {
                    b"start" => ("start", &[], Command::Start),
                    b"state" => ("state", &[], Command::State),
                    b"pause" => ("pause", &[], Command::Pause),
                    b"resume" => ("resume", &[], Command::Resume),
                    b"events" => ("events", &[EVENTS], Command::Events),
                    _ => ("checkpoint", &[CHECKPOINT], Command::Checkpoint),
                };
                let s = self.scan(first, Ctx::sub(label, table, false, Continue))?;
                if s.help {
                    return Ok(Command::Help);
                }
                wrap(IdArgs {
                    id: self.first_id(label, &s.positionals)?,
                })
            }
            // Handled by ociguard itself or forwarded; nothing in their flags matters to us.
            b"features" => Command::Features,
            b"spec" => Command::Spec,
            b"list" => Command::List,
            b"help" => Command::Help,
            _ => Command::Other {
                name: lossy(&args[k]),
            },
        };
        Ok(command)
    }

    fn create_args(&self, label: &'static str, s: &Scanned<'a>) -> Result<CreateArgs, ArgvError> {
        let mut a = CreateArgs {
            id: self.only_id(label, &s.positionals)?,
            ..CreateArgs::default()
        };
        for o in &s.opts {
            match o.opt.key {
                Key::Bundle => a.bundle = o.path()?,
                Key::PidFile => a.pid_file = Some(o.path()?),
                Key::ConsoleSocket => a.console_socket = Some(o.path()?),
                Key::PreserveFds => a.preserve_fds = Some(o.count()?),
                Key::NoPivot => a.no_pivot = o.switch(),
                Key::NoNewKeyring => a.no_new_keyring = o.switch(),
                Key::Detach => a.detach = o.switch(),
                Key::Config => {
                    return Err(ArgvError::Unsupported {
                        flag: o.opt.display(),
                        subcommand: label.into(),
                        reason: "crun would read a file other than the bundle's config.json, \
                                 which is the one policy applies to",
                    })
                }
                _ => {}
            }
        }
        Ok(a)
    }

    /// Exactly one positional: the id (create, run, restore).
    fn only_id(&self, subcommand: &str, positionals: &[usize]) -> Result<String, ArgvError> {
        if let Some(&extra) = positionals.get(1) {
            return Err(ArgvError::ExtraArgument {
                subcommand: subcommand.into(),
                arg: lossy(&self.args[extra]),
            });
        }
        self.first_id(subcommand, positionals)
    }

    /// The first positional is the id; the rest are the subcommand's business.
    fn first_id(&self, subcommand: &str, positionals: &[usize]) -> Result<String, ArgvError> {
        match positionals.first() {
            Some(&k) => self.id(k),
            None => Err(ArgvError::MissingId {
                subcommand: subcommand.into(),
            }),
        }
    }

    /// A container id names files under the state directories (ours and the runtime's).
    fn id(&self, k: usize) -> Result<String, ArgvError> {
        let id = self.utf8(k, "container id")?;
        let reason = if id.is_empty() {
            Some("empty")
        } else if id == "." || id == ".." {
            Some("not a usable name")
        } else if id.contains('/') {
            Some("contains '/'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ArgvError::BadValue {
                flag: "container id".into(),
                value: id,
                reason,
            }),
            None => Ok(id),
        }
    }

    fn utf8(&self, k: usize, what: &str) -> Result<String, ArgvError> {
        self.args[k]
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| ArgvError::NotUtf8 {
                what: what.into(),
                index: k,
            })
    }

    /// Walk one subcommand's tokens from `start`.
    fn scan(&mut self, start: usize, ctx: Ctx) -> Result<Scanned<'a>, ArgvError> {
        let args: &'a [OsString] = self.args;
        let mut s = Scanned::default();
        let mut ended = false;
        let mut items = Vec::new();
        let mut i = start;
        while i < args.len() {
            if !s.positionals.is_empty() {
                match ctx.after_id {
                    AfterId::Stop => break,
                    AfterId::RejectFlags if !ended && looks_like_flag(&args[i]) => {
                        return Err(ArgvError::FlagAfterId {
                            flag: lossy(&args[i]),
                            subcommand: ctx.subcommand.into(),
                        });
                    }
                    _ => {}
                }
            }
            if ended {
                s.positionals.push(i);
                i += 1;
                continue;
            }
            items.clear();
            i = self.token(i, ctx, &mut items)?;
            for item in items.drain(..) {
                match item {
                    Item::EndOfOptions => ended = true,
                    Item::Positional(k) => s.positionals.push(k),
                    // The runtime prints help and exits when it reaches the flag.
                    Item::Opt(o) if o.opt.key == Key::Help && o.switch() => {
                        s.help = true;
                        return Ok(s);
                    }
                    Item::Opt(o) => s.opts.push(o),
                }
            }
        }
        Ok(s)
    }

    /// Read the token at `i` into `out`; returns the index of the next unread token.
    fn token(&mut self, i: usize, ctx: Ctx, out: &mut Vec<Item<'a>>) -> Result<usize, ArgvError> {
        let args: &'a [OsString] = self.args;
        let t: &'a [u8] = args[i].as_bytes();
        if t == b"--" {
            out.push(Item::EndOfOptions);
            return Ok(i + 1);
        }
        if let Some(body) = t.strip_prefix(b"--") {
            let (name, inline) = split_eq(body);
            return match ctx.long(name) {
                Lookup::Found(opt) => self.with_value(i, opt, inline, out),
                Lookup::Ambiguous => {
                    let flag = format!("--{}", String::from_utf8_lossy(name));
                    self.ambiguous(ctx, &flag)?;
                    self.unknown(i, flag, inline, ctx)
                }
                Lookup::NotFound => {
                    let flag = format!("--{}", String::from_utf8_lossy(name));
                    self.unknown(i, flag, inline, ctx)
                }
            };
        }
        match t {
            [b'-', body @ ..] if !body.is_empty() => self.single_dash(i, body, ctx, out),
            // Includes "-" alone, which both runtimes treat as a word.
            _ => {
                out.push(Item::Positional(i));
                Ok(i + 1)
            }
        }
    }

    /// `-x...`: a Go-style long flag (`-root`, `-no-subreaper`, which go-runc emits for
    /// restore) or a getopt short option cluster (`-d`, `-bDIR`, `-dt`).
    fn single_dash(
        &mut self,
        i: usize,
        body: &'a [u8],
        ctx: Ctx,
        out: &mut Vec<Item<'a>>,
    ) -> Result<usize, ArgvError> {
        let (name, inline) = split_eq(body);
        let go_long = if name.len() > 1 {
            ctx.exact(name)
        } else {
            None
        };
        match (ctx.short(body[0]), go_long) {
            (Some(_), Some(long)) => {
                // `-bundle B`: runc reads --bundle, crun reads -b "undle".
                self.ambiguous(ctx, &format!("-{}", String::from_utf8_lossy(name)))?;
                self.with_value(i, long, inline, out)
            }
            // crun refuses the token outright, so only runc's reading can ever run.
            (None, Some(long)) => self.with_value(i, long, inline, out),
            (Some(_), None) => self.cluster(i, body, ctx, out),
            (None, None) => {
                let flag = format!("-{}", String::from_utf8_lossy(name));
                self.unknown(i, flag, inline, ctx)
            }
        }
    }

    /// getopt's reading of `-abc`: switches until one takes a value, which is the rest of the
    /// token or else the next token.
    fn cluster(
        &mut self,
        i: usize,
        body: &'a [u8],
        ctx: Ctx,
        out: &mut Vec<Item<'a>>,
    ) -> Result<usize, ArgvError> {
        let args: &'a [OsString] = self.args;
        for (j, &c) in body.iter().enumerate() {
            let rest = &body[j + 1..];
            let flag = || format!("-{}", String::from_utf8_lossy(&[c]));
            // `-x=v` is Go's spelling; getopt only sees it in the first position.
            let go_eq = if j == 0 {
                rest.strip_prefix(b"=")
            } else {
                None
            };
            let Some(opt) = ctx.short(c) else {
                if rest.is_empty() {
                    return self.unknown(i, flag(), None, ctx);
                }
                // The rest of the token is either its value or more options.
                self.ambiguous(ctx, &flag())?;
                continue;
            };
            let occ = |val| Item::Opt(Occ { opt, val, index: i });
            match opt.kind {
                Kind::Switch => {
                    if let Some(v) = go_eq {
                        // crun refuses `-d=...` ('=' is no option), so runc's reading stands.
                        out.push(occ(Val::Switch(parse_bool(opt, v)?)));
                        return Ok(i + 1);
                    }
                    out.push(occ(Val::Switch(true)));
                }
                Kind::OptionalValue => {
                    let on = if rest.is_empty() {
                        true
                    } else if let Some(v) = go_eq {
                        // runc: tty=v; crun: tty="=v", which is true.
                        self.ambiguous(ctx, &flag())?;
                        parse_bool(opt, v)?
                    } else {
                        // crun: any value but "false"/"no" turns it on.
                        !matches!(rest, b"false" | b"no")
                    };
                    out.push(occ(Val::Switch(on)));
                    return Ok(i + 1);
                }
                Kind::Value => {
                    if rest.is_empty() {
                        return match args.get(i + 1) {
                            Some(next) => {
                                out.push(occ(Val::Value(next.as_os_str())));
                                Ok(i + 2)
                            }
                            None => Err(ArgvError::MissingValue { flag: flag() }),
                        };
                    }
                    let v = match go_eq {
                        Some(v) => {
                            // runc: v; crun: "=v".
                            self.ambiguous(ctx, &flag())?;
                            v
                        }
                        None => rest,
                    };
                    out.push(occ(Val::Value(OsStr::from_bytes(v))));
                    return Ok(i + 1);
                }
            }
        }
        Ok(i + 1)
    }

    /// A known option, its value attached (`inline`) or in the next token.
    fn with_value(
        &mut self,
        i: usize,
        opt: &'static Opt,
        inline: Option<&'a [u8]>,
        out: &mut Vec<Item<'a>>,
    ) -> Result<usize, ArgvError> {
        let args: &'a [OsString] = self.args;
        let occ = |val| Item::Opt(Occ { opt, val, index: i });
        match opt.kind {
            Kind::Switch | Kind::OptionalValue => {
                let on = match inline {
                    Some(v) => parse_bool(opt, v)?,
                    None => true,
                };
                out.push(occ(Val::Switch(on)));
                Ok(i + 1)
            }
            Kind::Value => match inline {
                Some(v) => {
                    out.push(occ(Val::Value(OsStr::from_bytes(v))));
                    Ok(i + 1)
                }
                // Both runtimes take the next token verbatim, even if it starts with '-'.
                None => match args.get(i + 1) {
                    Some(next) => {
                        out.push(occ(Val::Value(next.as_os_str())));
                        Ok(i + 2)
                    }
                    None => Err(ArgvError::MissingValue {
                        flag: opt.display(),
                    }),
                },
            },
        }
    }

    /// A flag neither runtime's table (as we know them) has.
    fn unknown(
        &mut self,
        i: usize,
        flag: String,
        inline: Option<&[u8]>,
        ctx: Ctx,
    ) -> Result<usize, ArgvError> {
        if inline.is_some() {
            return Ok(i + 1);
        }
        let Some(next) = self.args.get(i + 1) else {
            return Ok(i + 1);
        };
        if self.forced == Some(i) {
            return Ok(i + 2);
        }
        let matters = ctx.strict || ctx.is_global();
        if ctx.strict && !looks_like_flag(next) {
            return Err(ArgvError::AmbiguousFlag {
                flag,
                subcommand: ctx.subcommand.into(),
            });
        }
        if matters {
            self.guesses.push(Guess {
                index: i,
                flag,
                subcommand: ctx.subcommand,
            });
        }
        Ok(i + 1)
    }

    /// Two readings of a flag differ. Fatal in an intercepted subcommand; among the global
    /// flags, fatal only once the subcommand turns out to be intercepted; otherwise the caller
    /// goes on with runc's reading.
    fn ambiguous(&mut self, ctx: Ctx, flag: &str) -> Result<(), ArgvError> {
        if ctx.is_global() {
            self.deferred.get_or_insert_with(|| flag.to_owned());
            Ok(())
        } else if ctx.strict {
            Err(ArgvError::AmbiguousFlag {
                flag: flag.to_owned(),
                subcommand: ctx.subcommand.into(),
            })
        } else {
            Ok(())
        }
    }
}

/// Returns the command a global flag decides (`--help`, `--version`).
fn apply_global(g: &mut GlobalOpts, o: &Occ<'_>) -> Result<Option<Command>, ArgvError> {
    match o.opt.key {
        Key::Root => g.root = Some(o.path()?),
        Key::Log => g.log = Some(o.path()?),
        Key::LogFormat => g.log_format = LogFormat::parse(o.value()?)?,
        Key::Criu => g.criu = Some(o.path()?),
        Key::Rootless => g.rootless = Some(o.string()?),
        Key::CgroupManager => g.cgroup_manager = Some(o.string()?),
        Key::SystemdCgroup => g.systemd_cgroup = o.switch(),
        Key::Debug => g.debug = o.switch(),
        Key::Version if o.switch() => return Ok(Some(Command::Version)),
        Key::Help if o.switch() => return Ok(Some(Command::Help)),
        _ => {}
    }
    Ok(None)
}

/// `--x=true|false`. Go also takes `1`, `t`, `F`...; crun's exec `--tty=VALUE` is false only
/// for `false`/`no`. `true` and `false` are the values both read alike.
fn parse_bool(opt: &Opt, v: &[u8]) -> Result<bool, ArgvError> {
    match v {
        b"true" => Ok(true),
        b"false" => Ok(false),
        _ => Err(ArgvError::BadValue {
            flag: opt.display(),
            value: String::from_utf8_lossy(v).into_owned(),
            reason: "expected true or false",
        }),
    }
}

fn split_eq(body: &[u8]) -> (&[u8], Option<&[u8]>) {
    match body.iter().position(|&b| b == b'=') {
        Some(p) => (&body[..p], Some(&body[p + 1..])),
        None => (body, None),
    }
}

/// Both runtimes treat "-" as a word (stdin, by convention) and anything else after a dash as
/// an option.
fn looks_like_flag(token: &OsStr) -> bool {
    let b = token.as_bytes();
    b.len() > 1 && b[0] == b'-'
}
