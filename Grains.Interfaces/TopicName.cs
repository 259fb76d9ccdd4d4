namespace OrleansPush;

/// <summary>
/// The naming rules of DESIGN.md "Names": a topic is 1–200 characters of <c>A-Z a-z 0-9 _ - . : / @</c>; the part
/// before the first <c>:</c> is its namespace; <c>user:{id}</c> is a personal channel.
/// </summary>
public static class TopicName
{
    public const int MaxLength = 200;
    public const string PersonalPrefix = "user:";

    /// <summary>The key of the default namespace's directory (topics without <c>:</c>); <c>(</c> is in no namespace's name.</summary>
    public const string DefaultNamespaceDirectory = "(default)";

    /// <summary>The key of the directory grain of <paramref name="ns"/> (<see cref="NamespaceOf"/>).</summary>
    public static string DirectoryOf(string ns) => ns.Length == 0 ? DefaultNamespaceDirectory : ns;

    public static bool IsValid(string? topic)
    {
        if (string.IsNullOrEmpty(topic) || topic.Length > MaxLength)
        {
            return false;
        }

        // '$' only as the first character: MQTT's reserved topics, which a filter starting with a wildcard never matches.
        for (var i = topic[0] == '$' ? 1 : 0; i < topic.Length; i++)
        {
            if (!IsAllowed(topic[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Topics of a namespace that starts with <c>_</c> (such as <c>_webhooks</c>) are OrleansPush's own: no
    /// client subscribes or publishes to them, and no backend publishes to them through the API.</summary>
    public static bool IsReserved(string topic) => topic.StartsWith('_') && topic.Contains(':', StringComparison.Ordinal);

    /// <summary>A user id is a topic name without a namespace separator, so that <c>user:{id}</c> is one channel.</summary>
    public static bool IsValidUserId(string? userId) =>
        !string.IsNullOrEmpty(userId)
        && userId.Length <= MaxLength - PersonalPrefix.Length
        && !userId.Contains(':', StringComparison.Ordinal)
        && IsValid(userId);

    /// <summary>The namespace of a topic, or the empty string when the topic has no <c>:</c>.</summary>
    public static string NamespaceOf(string topic)
    {
        var colon = topic.IndexOf(':', StringComparison.Ordinal);
        return colon < 0 ? string.Empty : topic[..colon];
    }

    public static string Personal(string userId) => PersonalPrefix + userId;

    /// <summary>The owner of a personal channel, or null when the topic is not one.</summary>
    public static string? PersonalOwner(string topic) =>
        topic.StartsWith(PersonalPrefix, StringComparison.Ordinal) && topic.Length > PersonalPrefix.Length
            ? topic[PersonalPrefix.Length..]
            : null;

    private static bool IsAllowed(char c) =>
        c is >= 'a' and <= 'z' or >= 'A' and <= 'Z' or >= '0' and <= '9'
            or '_' or '-' or '.' or ':' or '/' or '@';
}
