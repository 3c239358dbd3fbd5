# ~/.profile of a BitBuilder tenant home.
PATH="$HOME/.local/bin:$PATH"
export PATH
