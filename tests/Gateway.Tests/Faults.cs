using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;
using StackExchange.Redis;

namespace OrleansPush.Gateway.Tests;

/// <summary>Faults on the gateway's stream (the <see cref="IGatewayEventFilter"/> seam), per topic: a rule sees each
/// message of its topic and returns what the gateway gets instead (null: the message is lost). Topics without a rule
/// pass untouched, so one gateway serves many tests.</summary>
public sealed class StreamFaults : IGatewayEventFilter
{
    private readonly ConcurrentDictionary<string, Func<TopicMessage, TopicMessage?>> _rules = new(StringComparer.Ordinal);

    public void Set(string topic, Func<TopicMessage, TopicMessage?> rule) => _rules[topic] = rule;

    /// <summary>Loses the messages of <paramref name="topic"/> whose seq <paramref name="lose"/> picks.</summary>
    public void Lose(string topic, Func<long, bool> lose) => Set(topic, m => lose(m.Seq) ? null : m);

    public void OnEvent(GatewayEvent item, Action<GatewayEvent> handle)
    {
        switch (item)
        {
            case TopicMessage m when _rules.TryGetValue(m.Topic, out var rule):
                if (rule(m) is { } kept)
                {
                    handle(kept);
                }

                break;
            case TopicMessageBatch batch when batch.Messages.Length > 0 && _rules.TryGetValue(batch.Messages[0].Topic, out var rule):
                var left = batch.Messages.Select(rule).Where(m => m is not null).Select(m => m!).ToArray();
                if (left.Length > 0)
                {
                    handle(new TopicMessageBatch(left));
                }

                break;
            default:
                handle(item);
                break;
        }
    }

    public static Action<IServiceCollection> Register(StreamFaults faults) => services => services.AddSingleton<IGatewayEventFilter>(faults);
}

/// <summary>Faults on the gateway's calls to grains (an Orleans outgoing call filter on the gateway's own client; the
/// embedded silo is another host and is not affected): a call of <c>method</c> on the grain with key <c>key</c> can be
/// made to fail a number of times, or to wait for a gate the test opens.</summary>
public sealed class GrainCallFaults : IOutgoingGrainCallFilter
{
    private readonly ConcurrentDictionary<(string Method, string Key), Rule> _rules = new();

    /// <summary>The next <paramref name="times"/> calls fail (as a call to an unreachable grain does).</summary>
    public void Fail(string method, string key, int times) => _rules[(method, key)] = new Rule(times, null);

    /// <summary>Calls wait until the returned source is completed.</summary>
    public TaskCompletionSource Hold(string method, string key)
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _rules[(method, key)] = new Rule(0, gate);
        return gate;
    }

    /// <summary>How many calls of <paramref name="method"/> on <paramref name="key"/> were made.</summary>
    public int Calls(string method, string key) => _rules.TryGetValue((method, key), out var rule) ? rule.Calls : 0;

    public async Task Invoke(IOutgoingGrainCallContext context)
    {
        if (_rules.TryGetValue((context.InterfaceMethod.Name, context.TargetId.Key.ToString()!), out var rule))
        {
            Interlocked.Increment(ref rule.Calls);
            if (Interlocked.Decrement(ref rule.FailuresLeft) >= 0)
            {
                throw new TimeoutException($"Injected fault: {context.InterfaceMethod.Name} on {context.TargetId.Key} failed.");
            }

            if (rule.Gate is { } gate)
            {
                await gate.Task;
            }
        }

        await context.Invoke();
    }

    public static Action<IServiceCollection> Register(GrainCallFaults faults) => services => services.AddSingleton<IOutgoingGrainCallFilter>(faults);

    private sealed class Rule(int failures, TaskCompletionSource? gate)
    {
        public int FailuresLeft = failures;
        public int Calls;

        public TaskCompletionSource? Gate { get; } = gate;
    }
}

/// <summary>Makes a topic on the Redis store lose its history, as when the store lost it: its stored keys go and its
/// grain deactivates; its next activation starts a new epoch, and knows no gateway's lease until the gateway renews.</summary>
public static class HistoryLoss
{
    public static async Task ForceNewEpochAsync(IConnectionMultiplexer redis, string prefix, IClusterClient cluster, string topic)
    {
        var db = redis.GetDatabase();
        foreach (var endpoint in redis.GetEndPoints())
        {
            await foreach (var key in redis.GetServer(endpoint).KeysAsync(pattern: $"{prefix}*{topic}*"))
            {
                await db.KeyDeleteAsync(key);
            }
        }

        await cluster.GetGrain<ITopicGrain>(topic).Cast<Orleans.Core.Internal.IGrainManagementExtension>().DeactivateOnIdle();
    }
}
