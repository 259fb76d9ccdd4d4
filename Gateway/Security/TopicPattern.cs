namespace OrleansPush.Gateway.Security;

/// <summary>
/// A topic pattern from a token's <c>topics</c> or <c>publish</c> claim: <c>*</c> matches any run of characters within
/// one <c>:</c>-segment, <c>**</c> matches anything (across segments too), every other character matches itself.
/// <c>chat:**</c> covers <c>chat:room1</c> and <c>chat:eu:room1</c>; <c>game:*</c> covers <c>game:42</c> but not
/// <c>game:42:moves</c>; <c>**</c> covers every topic.
/// <para>Matching is linear in topic length times pattern length (no backtracking blow-up), so a hostile token cannot
/// make it expensive; patterns longer than <see cref="MaxLength"/> or with characters no topic has are refused when
/// the token is read.</para>
/// </summary>
public sealed class TopicPattern
{
    public const int MaxLength = 256;

    // The pattern as tokens: a literal character, ONE (a '*') or ANY (a '**').
    private const char One = '\u0001';
    private const char Any = '\u0002';
    private readonly string _tokens;

    private TopicPattern(string text, string tokens)
    {
        Text = text;
        _tokens = tokens;
    }

    public string Text { get; }

    /// <summary>True for <c>**</c>: the holder may use every topic (a backend).</summary>
    public bool MatchesEverything => _tokens.Length == 1 && _tokens[0] == Any;

    public static bool TryParse(string? text, out TopicPattern pattern)
    {
        pattern = null!;
        if (string.IsNullOrEmpty(text) || text.Length > MaxLength)
        {
            return false;
        }

        var tokens = new System.Text.StringBuilder(text.Length);
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '*')
            {
                var any = i + 1 < text.Length && text[i + 1] == '*';
                if (any)
                {
                    i++;
                }

                // Runs of stars collapse: '***' means the same as '**'.
                var token = any ? Any : One;
                if (tokens.Length > 0 && tokens[^1] is One or Any)
                {
                    tokens[^1] = tokens[^1] == Any || token == Any ? Any : One;
                    continue;
                }

                tokens.Append(token);
            }
            else if (TopicName.IsValid(c.ToString()))
            {
                tokens.Append(c);
            }
            else
            {
                return false;
            }
        }

        pattern = new TopicPattern(text, tokens.ToString());
        return true;
    }

    /// <summary>Whether <paramref name="topic"/> (a valid topic name) matches.</summary>
    public bool Matches(string topic)
    {
        if (MatchesEverything)
        {
            return true;
        }

        // reachable[j]: the first i topic characters can be matched by the first j tokens.
        var n = _tokens.Length;
        Span<bool> reachable = n + 1 <= 512 ? stackalloc bool[n + 1] : new bool[n + 1];
        reachable[0] = true;
        for (var j = 1; j <= n && _tokens[j - 1] is One or Any; j++)
        {
            reachable[j] = true;
        }

        foreach (var c in topic)
        {
            // Walk backwards so reachable[j - 1] still holds the previous character's value.
            for (var j = n; j >= 1; j--)
            {
                var t = _tokens[j - 1];
                reachable[j] = t switch
                {
                    Any => reachable[j] || reachable[j - 1],
                    One => c != ':' && (reachable[j] || reachable[j - 1]),
                    _ => reachable[j - 1] && t == c,
                };
            }

            reachable[0] = false;

            // A star may also match nothing: carry reachability forward over star tokens.
            for (var j = 1; j <= n; j++)
            {
                if (!reachable[j] && _tokens[j - 1] is One or Any && reachable[j - 1])
                {
                    reachable[j] = true;
                }
            }
        }

        return reachable[n];
    }

    public override string ToString() => Text;
}
