using Microsoft.Extensions.Options;
using MQTTnet;
using MQTTnet.Protocol;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>
/// MQTT wildcard subscriptions (<c>+</c>, <c>#</c>) in namespaces that allow them. A filter stays within one namespace
/// (its first level names it: <c>sensors:building1/+/temp</c>; a filter without <c>:</c> is in the default namespace and
/// may start with a wildcard: <c>+/C</c>, <c>#</c>, which match only topics without <c>:</c>, never <c>user:…</c> or
/// another namespace's, and never a topic that starts with <c>$</c>); it becomes one topic subscription per matching topic:
/// those the namespace's directory knows when the filter arrives (from now on), and each new topic the directory
/// announces later (from the position it announced, so its first messages are not missed). Topics the connection may
/// not read are left out. Overlapping filters and topic subscriptions of one connection share one subscription per
/// topic, delivered at the highest QoS of the filters that match it (MQTT 3.1.1 §3.3.5).
/// </summary>
internal sealed class MqttWildcards
{
    private readonly Lock _lock = new();
    private readonly List<Filter> _filters = [];
    private readonly Dictionary<MqttConnection, HashSet<string>> _joined = [];
    private readonly TopicDirectory _directory;
    private readonly ConnectionCommands _commands;
    private readonly TopicOptions _topics;
    private readonly ILogger<MqttWildcards> _logger;

    public MqttWildcards(TopicDirectory directory, ConnectionCommands commands, IOptions<TopicOptions> topics, ILogger<MqttWildcards> logger)
    {
        _directory = directory;
        _commands = commands;
        _topics = topics.Value;
        _logger = logger;
        directory.TopicFound += OnTopicFound;
    }

    public static bool IsWildcard(string filter) => filter.AsSpan().IndexOfAny('+', '#') >= 0;

    /// <summary>Why <paramref name="filter"/> cannot be served (with the SUBACK reason), or null when it can.</summary>
    public (MqttSubscribeReasonCode Code, string Reason)? Refusal(string filter)
    {
        var ns = NamespaceOf(filter);
        if (ns is null)
        {
            return (MqttSubscribeReasonCode.TopicFilterInvalid, "bad_topic: a wildcard filter starts with its namespace as a plain first level, e.g. sensors:building1/+/temp (or has no ':' at all: the default namespace).");
        }

        var levels = filter.Split('/');
        for (var i = 0; i < levels.Length; i++)
        {
            var level = levels[i];
            if ((level.Contains('+', StringComparison.Ordinal) && level != "+") || (level.Contains('#', StringComparison.Ordinal) && (level != "#" || i != levels.Length - 1)))
            {
                return (MqttSubscribeReasonCode.TopicFilterInvalid, "bad_topic: + stands for a whole level and # for the whole rest, as the last level.");
            }
        }

        if (!TopicName.IsValid(filter.Replace('+', 'x').Replace('#', 'x')))
        {
            return (MqttSubscribeReasonCode.TopicFilterInvalid, "bad_topic: a topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }

        var allowed = ns.Length == 0 ? _topics.Default.Wildcards : _topics.Namespaces.TryGetValue(ns, out var options) && options.Wildcards;
        return allowed
            ? null
            : (MqttSubscribeReasonCode.WildcardSubscriptionsNotSupported,
                $"bad_topic: {(ns.Length == 0 ? "the default namespace" : "namespace " + ns)} does not allow wildcard filters; subscribe to each topic.");
    }

    /// <summary>Adds a (valid, see <see cref="Refusal"/>) filter and joins the topics that match it now, each from
    /// <paramref name="resume"/>'s position for it (a persistent session's), or from now.</summary>
    /// <param name="restoring">The filter comes back with a persistent session: a matching topic the session has no
    /// position for appeared while its client was away (had it been known then, the session would have followed it), so
    /// it is joined from the position it announced, and what was published there meanwhile is delivered (MQTT 3.1.1
    /// §3.1.2.4).</param>
    public async Task SubscribeAsync(MqttConnection connection, string filter, MqttQualityOfServiceLevel qos, Func<string, Since?>? resume = null,
        bool restoring = false)
    {
        var ns = NamespaceOf(filter)!;
        lock (_lock)
        {
            _filters.RemoveAll(f => f.Connection == connection && f.Text == filter);
            _filters.Add(new Filter(connection, filter, ns, qos));
        }

        var directory = TopicName.DirectoryOf(ns);
        IEnumerable<(string Topic, Since? Announced)> known = restoring
            ? (await _directory.WatchPositionsAsync(directory)).Select(t => (t.Topic, (Since?)new Since(t.Epoch, t.Head)))
            : (await _directory.WatchAsync(directory)).Select(t => (t, (Since?)null));
        foreach (var (topic, announced) in known)
        {
            if (Matches(topic, filter, ns))
            {
                await JoinAsync(connection, topic, qos, resume?.Invoke(topic) ?? announced);
            }
        }
    }

    /// <summary>Removes a filter, and the topics only it matched.</summary>
    public void Unsubscribe(MqttConnection connection, string filter)
    {
        string[] leave = [];
        lock (_lock)
        {
            _filters.RemoveAll(f => f.Connection == connection && f.Text == filter);
            if (_joined.TryGetValue(connection, out var joined))
            {
                var ns = NamespaceOf(filter)!;
                var others = _filters.Where(f => f.Connection == connection).ToArray();
                leave = [.. joined.Where(t => Matches(t, filter, ns) && !others.Any(f => Matches(t, f.Text, f.Namespace)))];
                joined.ExceptWith(leave);
            }

            UnwatchUnused(NamespaceOf(filter)!);
        }

        foreach (var topic in leave)
        {
            _commands.Unsubscribe(connection, topic);
            connection.Unsubscribed(topic);
        }
    }

    /// <summary>The connection is gone (its topic subscriptions go with it).</summary>
    public void Remove(MqttConnection connection)
    {
        lock (_lock)
        {
            var namespaces = _filters.Where(f => f.Connection == connection).Select(f => f.Namespace).Distinct().ToArray();
            if (namespaces.Length == 0)
            {
                return;
            }

            _filters.RemoveAll(f => f.Connection == connection);
            _joined.Remove(connection);
            foreach (var ns in namespaces)
            {
                UnwatchUnused(ns);
            }
        }
    }

    private void OnTopicFound(string topic, Since? since)
    {
        Filter[] hits;
        lock (_lock)
        {
            // One subscription per connection, at the highest QoS of its filters that match.
            hits = [.. _filters
                .Where(f => Matches(topic, f.Text, f.Namespace) && !(_joined.TryGetValue(f.Connection, out var joined) && joined.Contains(topic)))
                .GroupBy(f => f.Connection)
                .Select(g => g.MaxBy(f => f.Qos)!)];
        }

        foreach (var hit in hits)
        {
            _ = JoinAsync(hit.Connection, topic, hit.Qos, since);
        }
    }

    private async Task JoinAsync(MqttConnection connection, string topic, MqttQualityOfServiceLevel qos, Since? since)
    {
        lock (_lock)
        {
            if (!_joined.TryGetValue(connection, out var joined))
            {
                _joined[connection] = joined = new HashSet<string>(StringComparer.Ordinal);
            }

            // Already followed, through another filter or a subscription of its own: one subscription per topic, at the
            // highest QoS asked for it.
            if (connection.Gone.IsCancellationRequested || connection.Follows(topic) || !joined.Add(topic))
            {
                connection.RaiseQos(topic, qos);
                return;
            }
        }

        try
        {
            connection.Subscribing(topic, qos, since);
            var result = await _commands.SubscribeAsync(connection, topic, since, 0);
            connection.Subscribed(topic, result);
            if (connection.Gone.IsCancellationRequested)
            {
                _commands.Unsubscribe(connection, topic); // it went away meanwhile: do not leave the subscription behind
            }
        }
        catch (Exception ex)
        {
            // Not the connection's to read (forbidden), over its limit, or unavailable: that topic is left out.
            lock (_lock)
            {
                if (_joined.TryGetValue(connection, out var joined))
                {
                    joined.Remove(topic);
                }
            }

            connection.Unsubscribed(topic);
            MqttLog.WildcardTopicSkipped(_logger, connection.ClientId, topic, ex.Message);
        }
    }

    private void UnwatchUnused(string ns)
    {
        if (!_filters.Any(f => f.Namespace == ns))
        {
            _directory.Unwatch(TopicName.DirectoryOf(ns));
        }
    }

    /// <summary>Whether <paramref name="topic"/> matches <paramref name="filter"/> (a topic name, or a valid wildcard filter),
    /// by the rules of <see cref="Matches(string, string, string)"/>.</summary>
    public static bool Matches(string topic, string filter) =>
        topic == filter || (IsWildcard(filter) && NamespaceOf(filter) is { } ns && Matches(topic, filter, ns));

    /// <summary>Whether <paramref name="topic"/> matches <paramref name="filter"/> of namespace <paramref name="ns"/>: the
    /// same namespace, MQTT's matching, and a filter that starts with a wildcard matches no topic that starts with
    /// <c>$</c> (MQTT 3.1.1 §4.7.2).</summary>
    private static bool Matches(string topic, string filter, string ns) =>
        TopicName.NamespaceOf(topic) == ns
        && !(topic.StartsWith('$') && filter.Length > 0 && filter[0] is '+' or '#')
        && MqttTopicFilterComparer.Compare(topic, filter) == MqttTopicFilterCompareResult.IsMatch;

    /// <summary>The namespace a filter names: the default namespace (empty) when it has no <c>:</c>; otherwise the one its
    /// first level names, or null when that level is not plain.</summary>
    private static string? NamespaceOf(string filter)
    {
        if (!filter.Contains(':', StringComparison.Ordinal))
        {
            return string.Empty;
        }

        var colon = filter.IndexOf(':', StringComparison.Ordinal);
        var slash = filter.IndexOf('/', StringComparison.Ordinal);
        if (colon <= 0 || (slash >= 0 && slash < colon))
        {
            return null;
        }

        var firstLevel = slash < 0 ? filter : filter[..slash];
        return IsWildcard(firstLevel) ? null : filter[..colon];
    }

    private sealed record Filter(MqttConnection Connection, string Text, string Namespace, MqttQualityOfServiceLevel Qos);
}
