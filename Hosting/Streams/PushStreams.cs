using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Orleans.Configuration;
using Orleans.Providers;
using Orleans.Streams;

namespace OrleansPush.Hosting;

/// <summary>
/// One partition of the push stream: the events its producers enqueued and its pulling agent has not read yet. The
/// contract is the memory stream's (Orleans' <c>MemoryStreamQueueGrain</c>): at most once, in enqueue order, at most
/// its capacity (the memory stream queue's bound) batches held, lost when the silo holding the queue dies (gateways repair gaps from history).
/// What differs is reading: a read of an empty queue waits until an event arrives, or until its bounded wait is over,
/// instead of answering empty at once to a reader that polls.
/// </summary>
[Alias("OrleansPush.IPushQueueGrain")]
public interface IPushQueueGrain : IGrainWithGuidKey
{
    /// <summary>Appends one event batch. Throws when the queue already holds its capacity (the memory stream queue's bound)
    /// batches (its reader is gone or far behind): the producer counts the write as failed.</summary>
    [Alias("Enqueue")]
    Task Enqueue(MemoryMessageData data);

    /// <summary>Takes up to <paramref name="maxCount"/> batches in enqueue order. An empty queue answers when a batch
    /// arrives, after <paramref name="wait"/> (empty), or when the call is cancelled (empty); interleaved with
    /// enqueues, so a waiting read never holds a producer up.</summary>
    [AlwaysInterleave, Alias("Dequeue")]
    Task<List<MemoryMessageData>> Dequeue(int maxCount, TimeSpan wait, CancellationToken cancellationToken = default);
}

/// <summary>
/// The push stream provider (<see cref="PushNames.StreamProvider"/>): Orleans' memory stream with its queue replaced by
/// the push queue grain (<see cref="IPushQueueGrain"/>, implemented in Grains), whose empty reads wait for the next event.
/// </summary>
/// <remarks>
/// Orleans' pulling agent awaits each <c>GetQueueMessagesAsync</c> and starts no other read while one is pending; it
/// keeps reading while reads return events, and after an empty read starts again on its next timer tick
/// (<see cref="PushStreamOptions.PollPeriod"/>). With the memory queue an empty read answers at once, so an idle node
/// polled every queue every period and each event waited for the next poll. With this queue a read returns as soon as
/// an event is enqueued, or empty after <see cref="ReadWait"/>: the hop is immediate and an idle queue costs one call
/// per wait.
/// <para>The memory stream's receiver, cache and batch container are internal to Orleans, and its factory takes its
/// queue grains from the <see cref="IGrainFactory"/> it is given; so the factory is Orleans' own, given a grain factory
/// that hands out push queue grains behind the memory queue's interface. Event bytes, sequence tokens,
/// caching and delivery stay exactly the memory stream's.</para>
/// </remarks>
public static class PushStreams
{
    /// <summary>Longest an empty read waits. It must stay well under the grain-call timeout (a read is a grain call);
    /// it is also how long a stopping pulling agent may wait for its last read.</summary>
    public static readonly TimeSpan MaxReadWait = TimeSpan.FromSeconds(5);

    /// <summary>The wait of an empty read under a grain-call timeout of <paramref name="responseTimeout"/>.</summary>
    public static TimeSpan ReadWait(TimeSpan responseTimeout) => responseTimeout / 2 < MaxReadWait ? responseTimeout / 2 : MaxReadWait;

    public static ISiloBuilder AddPushStreams(this ISiloBuilder silo, PushStreamOptions streams, TimeSpan responseTimeout)
    {
        var wait = ReadWait(responseTimeout);
        return silo.AddPersistentStreams(PushNames.StreamProvider, (services, name) => CreateFactory(services, name, wait), b =>
        {
            b.Configure<HashRingStreamQueueMapperOptions>(o => o.Configure(x => x.TotalQueueCount = streams.QueueCount));
            b.ConfigurePullingAgent(o => o.Configure(x =>
            {
                x.GetQueueMsgsTimerPeriod = streams.PollPeriod;
                x.BatchContainerBatchSize = streams.DeliveryBatchSize;
            }));
        });
    }

    /// <summary>The client side: a gateway only consumes, but its provider must have the same name and partitions.</summary>
    public static IClientBuilder AddPushStreams(this IClientBuilder client, PushStreamOptions streams, TimeSpan responseTimeout)
    {
        var wait = ReadWait(responseTimeout);
        return client.AddPersistentStreams(PushNames.StreamProvider, (services, name) => CreateFactory(services, name, wait),
            b => b.Configure<HashRingStreamQueueMapperOptions>(o => o.Configure(x => x.TotalQueueCount = streams.QueueCount)));
    }

    private static IQueueAdapterFactory CreateFactory(IServiceProvider services, string name, TimeSpan wait)
    {
        var factory = new MemoryAdapterFactory<DefaultMemoryMessageBodySerializer>(
            name,
            services.GetRequiredService<IOptionsMonitor<StreamCacheEvictionOptions>>().Get(name),
            services.GetRequiredService<IOptionsMonitor<StreamStatisticOptions>>().Get(name),
            services.GetRequiredService<IOptionsMonitor<HashRingStreamQueueMapperOptions>>().Get(name),
            services,
            new QueueGrainFactory(services.GetRequiredService<IGrainFactory>(), wait),
            services.GetRequiredService<ILoggerFactory>());
        factory.Init();
        return factory;
    }

    /// <summary>The memory queue's interface over a push queue grain.</summary>
    private sealed class QueueHandle(IPushQueueGrain queue, TimeSpan wait) : IMemoryStreamQueueGrain
    {
        public Task Enqueue(MemoryMessageData data) => queue.Enqueue(data);

        public Task Enqueue(MemoryMessageData data, CancellationToken cancellationToken) => queue.Enqueue(data);

        public Task<List<MemoryMessageData>> Dequeue(int maxCount) => queue.Dequeue(maxCount, wait);

        public Task<List<MemoryMessageData>> Dequeue(int maxCount, CancellationToken cancellationToken) => queue.Dequeue(maxCount, wait, cancellationToken);
    }

    /// <summary>Hands out push queue grains where the memory adapter asks for its queue grains; everything
    /// else goes to the real grain factory (the adapter asks for nothing else today).</summary>
    private sealed class QueueGrainFactory(IGrainFactory inner, TimeSpan wait) : IGrainFactory
    {
        public TGrainInterface GetGrain<TGrainInterface>(Guid primaryKey, string? grainClassNamePrefix = null)
            where TGrainInterface : IGrainWithGuidKey =>
            typeof(TGrainInterface) == typeof(IMemoryStreamQueueGrain)
                ? (TGrainInterface)(object)new QueueHandle(inner.GetGrain<IPushQueueGrain>(primaryKey), wait)
                : inner.GetGrain<TGrainInterface>(primaryKey, grainClassNamePrefix);

        public TGrainInterface GetGrain<TGrainInterface>(long primaryKey, string? grainClassNamePrefix = null)
            where TGrainInterface : IGrainWithIntegerKey => inner.GetGrain<TGrainInterface>(primaryKey, grainClassNamePrefix);

        public TGrainInterface GetGrain<TGrainInterface>(string primaryKey, string? grainClassNamePrefix = null)
            where TGrainInterface : IGrainWithStringKey => inner.GetGrain<TGrainInterface>(primaryKey, grainClassNamePrefix);

        public TGrainInterface GetGrain<TGrainInterface>(Guid primaryKey, string keyExtension, string? grainClassNamePrefix = null)
            where TGrainInterface : IGrainWithGuidCompoundKey => inner.GetGrain<TGrainInterface>(primaryKey, keyExtension, grainClassNamePrefix);

        public TGrainInterface GetGrain<TGrainInterface>(long primaryKey, string keyExtension, string? grainClassNamePrefix = null)
            where TGrainInterface : IGrainWithIntegerCompoundKey => inner.GetGrain<TGrainInterface>(primaryKey, keyExtension, grainClassNamePrefix);

        public TGrainObserverInterface CreateObjectReference<TGrainObserverInterface>(IGrainObserver obj)
            where TGrainObserverInterface : IGrainObserver => inner.CreateObjectReference<TGrainObserverInterface>(obj);

        public void DeleteObjectReference<TGrainObserverInterface>(IGrainObserver obj)
            where TGrainObserverInterface : IGrainObserver => inner.DeleteObjectReference<TGrainObserverInterface>(obj);

        public IGrain GetGrain(Type grainInterfaceType, Guid grainPrimaryKey) => inner.GetGrain(grainInterfaceType, grainPrimaryKey);

        public IGrain GetGrain(Type grainInterfaceType, long grainPrimaryKey) => inner.GetGrain(grainInterfaceType, grainPrimaryKey);

        public IGrain GetGrain(Type grainInterfaceType, string grainPrimaryKey) => inner.GetGrain(grainInterfaceType, grainPrimaryKey);

        public IGrain GetGrain(Type grainInterfaceType, Guid grainPrimaryKey, string keyExtension) => inner.GetGrain(grainInterfaceType, grainPrimaryKey, keyExtension);

        public IGrain GetGrain(Type grainInterfaceType, long grainPrimaryKey, string keyExtension) => inner.GetGrain(grainInterfaceType, grainPrimaryKey, keyExtension);

        public TGrainInterface GetGrain<TGrainInterface>(GrainId grainId) where TGrainInterface : IAddressable => inner.GetGrain<TGrainInterface>(grainId);

        public IAddressable GetGrain(GrainId grainId) => inner.GetGrain(grainId);

        public IAddressable GetGrain(GrainId grainId, GrainInterfaceType interfaceType) => inner.GetGrain(grainId, interfaceType);

        public IAddressable GetGrain(Type interfaceType, IdSpan grainKey, string grainClassNamePrefix) => inner.GetGrain(interfaceType, grainKey, grainClassNamePrefix);

        public IAddressable GetGrain(Type interfaceType, IdSpan grainKey) => inner.GetGrain(interfaceType, grainKey);
    }
}
