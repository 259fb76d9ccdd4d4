using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Hosting;

/// <summary>How a stopping gateway lets its clients go (<c>OrleansPush:Gateway</c>, beside
/// <see cref="GatewayOptions"/>).</summary>
public sealed class DrainOptions
{
    public const string Section = GatewayOptions.Section;
    public static readonly TimeSpan DefaultDrainTimeout = TimeSpan.FromSeconds(20);
    public const int DefaultDrainBatchSize = 200;
    public static readonly TimeSpan MaxDrainBatchGap = TimeSpan.FromSeconds(1);

    /// <summary>Everything the drain does (turning not-ready, saying <c>bye</c>, waiting for clients to go) happens
    /// within this. The host's shutdown timeout is this plus <see cref="ShutdownMargin"/>; a pod's
    /// <c>terminationGracePeriodSeconds</c> must exceed that plus its <c>preStop</c> sleep.</summary>
    public TimeSpan DrainTimeout { get; set; } = DefaultDrainTimeout;

    /// <summary>Connections told <c>bye</c> at once; batches are spread over the first half of the drain so that
    /// the clients do not all reconnect to the other gateways in the same instant.</summary>
    public int DrainBatchSize { get; set; } = DefaultDrainBatchSize;

    /// <summary>How long the gateway answers <c>/readyz</c> with 503 before it starts closing connections, so that
    /// load balancers stop sending it new clients first. Kubernetes does the same with a <c>preStop</c> sleep, so
    /// the default is none.</summary>
    public TimeSpan DrainDelay { get; set; } = TimeSpan.Zero;

    /// <summary>What the host gets, after the drain, to stop the Orleans client and Kestrel.</summary>
    public static readonly TimeSpan ShutdownMargin = TimeSpan.FromSeconds(10);

    public TimeSpan ShutdownTimeout => DrainTimeout + ShutdownMargin;
}

internal sealed class DrainOptionsValidator : IValidateOptions<DrainOptions>
{
    public ValidateOptionsResult Validate(string? name, DrainOptions o)
    {
        var failures = new List<string>();
        if (o.DrainTimeout <= TimeSpan.Zero || o.DrainTimeout > TimeSpan.FromMinutes(10))
        {
            failures.Add($"{DrainOptions.Section}:DrainTimeout must be more than 0 and at most 00:10:00 (is {o.DrainTimeout}).");
        }

        if (o.DrainBatchSize < 1)
        {
            failures.Add($"{DrainOptions.Section}:DrainBatchSize must be at least 1 (is {o.DrainBatchSize}).");
        }

        if (o.DrainDelay < TimeSpan.Zero || o.DrainDelay >= o.DrainTimeout)
        {
            failures.Add($"{DrainOptions.Section}:DrainDelay must be at least 0 and less than DrainTimeout (is {o.DrainDelay}).");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

/// <summary>
/// The connections open on this gateway, and the graceful drain when it stops.
/// <para>Guarantees: once <see cref="IsDraining"/> is true it stays true; every connection open then, or opened
/// after (a handshake already past the <see cref="ConnectionDoor"/>, which refuses new ones while draining), is closed with reason <c>shutdown</c>, which each transport turns
/// into its <c>bye</c> (<c>{"op":"bye","code":WireCodes.Shutdown,"reconnect":true}</c> on the raw protocol, a <c>bye</c>
/// invocation on SignalR, <c>event: bye</c> on SSE), in jittered batches, all within
/// <see cref="DrainOptions.DrainTimeout"/>. What is still open at the deadline is left to Kestrel, which aborts it
/// when it stops.</para>
/// </summary>
public sealed class ConnectionDrain(IOptions<DrainOptions> options, ILogger<ConnectionDrain> logger)
{
    private readonly ConcurrentDictionary<PushConnection, byte> _open = new();
    private readonly DrainOptions _options = options.Value;
    private int _draining;

    public bool IsDraining => Volatile.Read(ref _draining) == 1;

    public int OpenConnections => _open.Count;

    /// <summary>A snapshot of the open connections (for the admin API).</summary>
    public IReadOnlyCollection<PushConnection> Connections => [.. _open.Keys];

    /// <summary>A connection opened; closed at once as <c>shutdown</c> when the gateway is already draining.</summary>
    public void Track(PushConnection connection)
    {
        _open.TryAdd(connection, 0);
        if (IsDraining)
        {
            connection.Close(WireCodes.Shutdown);
        }
    }

    public void Untrack(PushConnection connection) => _open.TryRemove(connection, out _);

    /// <summary>Turns not-ready, then closes every connection in jittered batches and waits for them to go, up to
    /// the deadline. Runs once; later calls return at once.</summary>
    public async Task DrainAsync()
    {
        if (Interlocked.Exchange(ref _draining, 1) == 1)
        {
            return;
        }

        var clock = Stopwatch.StartNew();
        var deadline = _options.DrainTimeout;
        DrainLog.DrainStarted(logger, _open.Count, deadline);
        if (_options.DrainDelay > TimeSpan.Zero)
        {
            await Task.Delay(_options.DrainDelay);
        }

        var all = _open.Keys.ToArray();
        Random.Shared.Shuffle(all);
        var batches = all.Chunk(_options.DrainBatchSize).ToArray();
        var spread = (deadline - clock.Elapsed) / 2;
        var gap = batches.Length > 1 ? TimeSpan.FromTicks(Math.Min(spread.Ticks / batches.Length, DrainOptions.MaxDrainBatchGap.Ticks)) : TimeSpan.Zero;
        for (var i = 0; i < batches.Length; i++)
        {
            foreach (var connection in batches[i])
            {
                connection.Close(WireCodes.Shutdown);
            }

            if (i < batches.Length - 1 && gap > TimeSpan.Zero)
            {
                // Jitter: between half and one and a half gaps, so batches do not line up across gateways.
                await Task.Delay(gap * (0.5 + Random.Shared.NextDouble()));
            }
        }

        // Wait for the goodbyes to get out and the clients to go; close whatever slipped in meanwhile.
        while (!_open.IsEmpty && clock.Elapsed < deadline)
        {
            foreach (var late in _open.Keys)
            {
                late.Close(WireCodes.Shutdown);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50));
        }

        DrainLog.DrainFinished(logger, all.Length, _open.Count, clock.Elapsed);
    }
}

/// <summary>
/// Starts the drain when the host begins to stop. SignalR closes its connections (without a goodbye) from an
/// <see cref="IHostApplicationLifetime.ApplicationStopping"/> callback registered when the hub is mapped, and Kestrel
/// would abort the rest; stopping callbacks run newest first, so this one, registered once the host has started,
/// runs before SignalR's and holds the stop until every client has been told <c>bye</c> (bounded by the drain
/// deadline, which the host's shutdown timeout covers).
/// </summary>
internal sealed class DrainOnStop(IHostApplicationLifetime lifetime, ConnectionDrain drain) : IHostedService
{
    private CancellationTokenRegistration _started;
    private CancellationTokenRegistration _stopping;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _started = lifetime.ApplicationStarted.Register(() =>
            _stopping = lifetime.ApplicationStopping.Register(() => drain.DrainAsync().GetAwaiter().GetResult()));
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _started.Dispose();
        _stopping.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary><c>/readyz</c>: 200 when the cluster answers and the gateway is not draining, else 503. Kubernetes
/// stops routing new clients to a gateway that is not ready.</summary>
internal sealed class Readiness(IClusterClient cluster, ConnectionDrain drain, ILogger<Readiness> logger)
{
    private static readonly TimeSpan CheckTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan CacheFor = TimeSpan.FromSeconds(1);
    private readonly SemaphoreSlim _gate = new(1, 1);
    private long _checkedAt = long.MinValue;
    private bool _reachable;

    public async Task<IResult> CheckAsync(CancellationToken cancellationToken)
    {
        if (drain.IsDraining)
        {
            return Results.Json(new { status = "draining" }, statusCode: StatusCodes.Status503ServiceUnavailable);
        }

        return await ClusterReachableAsync(cancellationToken)
            ? Results.Ok(new { status = "ready" })
            : Results.Json(new { status = WireCodes.Unavailable }, statusCode: StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>Asks the cluster for its active silos, at most once a second however often the probe comes.</summary>
    private async Task<bool> ClusterReachableAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_checkedAt != long.MinValue && Stopwatch.GetElapsedTime(_checkedAt) < CacheFor)
            {
                return _reachable;
            }

            try
            {
                var hosts = await cluster.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true, cancellationToken).WaitAsync(CheckTimeout, cancellationToken);
                _reachable = hosts.Count > 0;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                DrainLog.ClusterUnreachable(logger, ex);
                _reachable = false;
            }

            _checkedAt = Stopwatch.GetTimestamp();
            return _reachable;
        }
        finally
        {
            _gate.Release();
        }
    }
}

internal static partial class DrainLog
{
    [LoggerMessage(EventId = 2400, Level = LogLevel.Information, Message = "Draining: not ready any more; closing {Connections} connections within {Deadline}")]
    public static partial void DrainStarted(ILogger logger, int connections, TimeSpan deadline);

    [LoggerMessage(EventId = 2401, Level = LogLevel.Information, Message = "Drained: told {Closed} connections bye; {Left} still open after {Elapsed}")]
    public static partial void DrainFinished(ILogger logger, int closed, int left, TimeSpan elapsed);

    [LoggerMessage(EventId = 2402, Level = LogLevel.Warning, Message = "Readiness: the cluster did not answer")]
    public static partial void ClusterUnreachable(ILogger logger, Exception exception);
}
