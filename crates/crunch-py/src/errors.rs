//! crunch's errors as Python exceptions: `CrunchError` and one subclass per kind of bad input.
//!
//! The class comes from the first error in the chain whose type says what went wrong (the
//! library crates' error types); the message is the CLI's (`crunch_cli::message`). Errors that
//! carry no library type are the CLI's own checks of its arguments (`--ctx must be at least
//! 2`, a flag a method does not read, an unreadable `--data` file), hence `InputError`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    _crunch,
    CrunchError,
    PyException,
    "Base class of every error crunch raises."
);
create_exception!(
    _crunch,
    FormatError,
    CrunchError,
    "A model or file that crunch cannot read: not a model, truncated, malformed, an unsupported \
     architecture or tensor type."
);
create_exception!(
    _crunch,
    RecipeError,
    CrunchError,
    "A recipe (dict or TOML) that cannot be run: unknown keys or methods, overlapping stages, a \
     stage that does not fit a layer."
);
create_exception!(
    _crunch,
    InputError,
    CrunchError,
    "A bad argument: an unknown option, a value out of range, options that do not go together, \
     an unreadable data file, arrays of the wrong shape."
);
create_exception!(
    _crunch,
    OutputError,
    CrunchError,
    "An output crunch will not write: it exists (pass force=True), it is an input, or it \
     cannot be written."
);

/// A parse error of the CLI's arguments (clap), in an `anyhow` chain.
#[derive(Debug)]
pub struct Usage(pub clap::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&usage_text(&self.0))
    }
}

impl std::error::Error for Usage {}

/// clap's message without its `error: ` prefix and usage footer.
fn usage_text(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .split("\n\nUsage:")
        .next()
        .unwrap_or(&text)
        .trim()
        .trim_start_matches("error: ");
    first
        .split("\n\nFor more information")
        .next()
        .unwrap_or(first)
        .to_string()
}

pub fn usage(e: &clap::Error) -> PyErr {
    InputError::new_err(usage_text(e))
}

#[derive(Clone, Copy)]
enum Kind {
    Format,
    Recipe,
    Input,
    Output,
    Other,
}

/// The exception for `err`, with crunch's message.
pub fn to_py(err: &anyhow::Error) -> PyErr {
    let msg = crunch_cli::message(err);
    let kind = err.chain().find_map(kind_of).unwrap_or(Kind::Input);
    match kind {
        Kind::Format => FormatError::new_err(msg),
        Kind::Recipe => RecipeError::new_err(msg),
        Kind::Input => InputError::new_err(msg),
        Kind::Output => OutputError::new_err(msg),
        Kind::Other => CrunchError::new_err(msg),
    }
}

/// What one error of the chain says, if its type is one of crunch's.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    use crunch_calib::Error as C;
    use crunch_export::Error as X;
    if e.is::<Usage>() || e.is::<std::io::Error>() {
        return Some(Kind::Input);
    }
    if e.is::<crunch_calib::RecipeError>() {
        return Some(Kind::Recipe);
    }
    if e.is::<crunch_formats::FormatError>()
        || e.is::<crunch_repr::ReprError>()
        || e.is::<crunch_pack::PackError>()
    {
        return Some(Kind::Format);
    }
    if let Some(m) = e.downcast_ref::<crunch_model::Error>() {
        return Some(model_kind(m));
    }
    if let Some(c) = e.downcast_ref::<C>() {
        return Some(match c {
            C::Model(m) => model_kind(m),
            // A stage that does not fit a layer (checked before anything runs) or fails on it.
            C::Overlap { .. } | C::NoStages | C::NeedsCalibration { .. } | C::Layer { .. } => {
                Kind::Recipe
            }
            C::SelfSpec { .. } | C::Windows(_) | C::NoWindows => Kind::Input,
            C::MissingTensor { .. } => Kind::Format,
            _ => Kind::Other,
        });
    }
    if let Some(x) = e.downcast_ref::<X>() {
        return Some(match x {
            X::Format(_) | X::Model(_) | X::Gguf { .. } | X::Tokenizer { .. } => Kind::Format,
            X::Refused { .. } | X::NotALinear { .. } => Kind::Input,
            X::Output { .. } | X::Io { .. } => Kind::Output,
            _ => Kind::Other,
        });
    }
    if let Some(v) = e.downcast_ref::<crunch_eval::EvalError>() {
        return Some(match v {
            crunch_eval::EvalError::Model(m) => model_kind(m),
            crunch_eval::EvalError::TooFewTokens(_)
            | crunch_eval::EvalError::Vocabularies { .. } => Kind::Input,
            _ => Kind::Other,
        });
    }
    if let Some(g) = e.downcast_ref::<crunch_generate::Error>() {
        return Some(match g {
            crunch_generate::Error::Load(m) => model_kind(m),
            crunch_generate::Error::Model(_) => Kind::Format,
            crunch_generate::Error::Request(_) => Kind::Input,
        });
    }
    if let Some(s) = e.downcast_ref::<crunch_search::Error>() {
        return match s {
            crunch_search::Error::Calib(c) => kind_of(c.as_ref()),
            crunch_search::Error::Eval(v) => kind_of(v.as_ref()),
            crunch_search::Error::Model(m) => Some(model_kind(m)),
            crunch_search::Error::BudgetTooSmall { .. } | crunch_search::Error::Params(_) => {
                Some(Kind::Input)
            }
            crunch_search::Error::BadFile { .. } => Some(Kind::Format),
            _ => Some(Kind::Other),
        };
    }
    if e.is::<crunch_compress::CompressError>() || e.is::<crunch_runtime::Error>() {
        return Some(Kind::Other);
    }
    None
}

fn model_kind(m: &crunch_model::Error) -> Kind {
    match m {
        crunch_model::Error::Backend(_) => Kind::Other,
        _ => Kind::Format,
    }
}
