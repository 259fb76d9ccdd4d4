using System.Globalization;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Http;

/// <summary>
/// The text forms of positions used by the HTTP transports. A single position is <c>epoch:seq</c> (long polling's
/// <c>since</c>). A stream's position, the SSE event id, is a comma-separated list of <c>topic=epoch:seq</c>, one
/// entry per topic of the stream, e.g. <c>news=k3q2m7xa:41,chat:room1=b7d2kq4z:9</c>. Topic names cannot hold
/// <c>=</c> or <c>,</c>, and epochs are base-32, so the list parses unambiguously (the last <c>:</c> of an entry
/// separates the seq); every character is URL-safe and none is a line break, as an SSE id must be.
/// </summary>
internal static class StreamPositions
{
    /// <summary>Parses <c>epoch:seq</c>.</summary>
    public static bool TryParseSince(ReadOnlySpan<char> text, out Since since)
    {
        since = null!;
        var colon = text.LastIndexOf(':');
        if (colon < 0 || colon > 64
            || !long.TryParse(text[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var seq))
        {
            return false;
        }

        var epoch = text[..colon];
        foreach (var c in epoch)
        {
            if (c is ',' or '=' or ':' || char.IsControl(c) || char.IsWhiteSpace(c))
            {
                return false;
            }
        }

        since = new Since(epoch.ToString(), seq);
        return true;
    }

    /// <summary>Parses a stream position (an SSE event id). Empty text is an empty list.</summary>
    public static bool TryParseList(string? text, int maxTopics, out Dictionary<string, Since> positions, out string error)
    {
        positions = new Dictionary<string, Since>(StringComparer.Ordinal);
        error = string.Empty;
        if (string.IsNullOrWhiteSpace(text))
        {
            return true;
        }

        foreach (var range in text.AsSpan().Trim().Split(','))
        {
            var entry = text.AsSpan().Trim()[range];
            var eq = entry.IndexOf('=');
            if (eq <= 0)
            {
                error = "An event id is a list of topic=epoch:seq separated by commas.";
                return false;
            }

            var topic = entry[..eq].ToString();
            if (!TopicName.IsValid(topic) || !TryParseSince(entry[(eq + 1)..], out var since))
            {
                error = "An event id is a list of topic=epoch:seq separated by commas.";
                return false;
            }

            if (positions.Count >= maxTopics && !positions.ContainsKey(topic))
            {
                error = "The event id names more topics than a stream may hold.";
                return false;
            }

            positions[topic] = since;
        }

        return true;
    }

    /// <summary>Formats one list entry, <c>topic=epoch:seq</c>.</summary>
    public static string Entry(string topic, string epoch, long seq) =>
        topic + "=" + epoch + ":" + seq.ToString(CultureInfo.InvariantCulture);
}
