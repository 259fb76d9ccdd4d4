using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace OrleansPush.Gateway.Tests;

/// <summary>A sequence of JSON documents, each a few random edits (inserts, deletes, replacements, a counter) of the one
/// before: text with multi-byte UTF-8, surrogate pairs, quotes, backslashes and control characters, written with
/// irregular whitespace, so that anything but a byte-exact rebuild shows. Seeded: the same seed gives the same documents.</summary>
public sealed class RandomEdits(int seed)
{
    private static readonly string[] Pieces =
        ["a", "b", "c", "x", "Z", " ", " ", "é", "ß", "漢", "字", "😀", "🎮", "\"", "\\", "\n", "\t", "\u0001", "{", "}", ":", ",", "0", "7", "/"];

    private static readonly JsonSerializerOptions Raw = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly Random _random = new(seed);
    private readonly List<string> _body = [];
    private int _n;

    /// <summary>The next document as UTF-8 JSON.</summary>
    public byte[] Next()
    {
        if (_n++ == 0)
        {
            _body.AddRange(Run(600));
        }
        else
        {
            for (var edits = _random.Next(1, 4); edits > 0; edits--)
            {
                Edit();
            }
        }

        var space = new string(' ', _random.Next(0, 3));
        return Encoding.UTF8.GetBytes(
            $"{{\"n\":{_n},{space}\"body\" :{JsonSerializer.Serialize(string.Concat(_body), Raw)}, \"pieces\":{_body.Count}{space}}}");
    }

    private void Edit()
    {
        var at = _random.Next(_body.Count + 1);
        switch (_random.Next(3))
        {
            case 0:
                _body.InsertRange(at, Run(_random.Next(1, 12)));
                break;
            case 1 when _body.Count > 20:
                _body.RemoveRange(Math.Min(at, _body.Count - 1), Math.Min(_random.Next(1, 12), _body.Count - Math.Min(at, _body.Count - 1)));
                break;
            default:
                if (at < _body.Count)
                {
                    _body[at] = Pieces[_random.Next(Pieces.Length)];
                }

                break;
        }
    }

    private IEnumerable<string> Run(int count) => Enumerable.Range(0, count).Select(_ => Pieces[_random.Next(Pieces.Length)]).ToArray();
}
