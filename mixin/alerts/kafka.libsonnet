// Kafka, the change stream between the TX engines and ingestion. Broker metrics come from the
// JMX exporter (deploy/kafka/jmx-exporter.yml, job "kafka"), consumer-group lag from
// kafka_exporter (job "kafka-exporter"). Gauges are read through last_over_time(x[2m]) so a
// failed scrape does not reset `for:` (see database.rules.yml).
local lib = import '../lib/render.libsonnet';
{
  ruleFiles+:: {
    'kafka.rules.yml': {
      header: 'Kafka: partitions, the controller, ISR shrinks (JMX exporter) and the ingestion consumer group lag (kafka_exporter).',
      groups: [
        lib.group($._config, 'kafka', [
          {
            alert: 'KafkaUnderReplicatedPartitions',
            component: 'kafka',
            expr: 'sum by (%(cji)s) (last_over_time(kafka_server_replicamanager_underreplicatedpartitions[2m])) > 0',
            summary: 'A Kafka broker has under-replicated partitions',
            description: 'Broker {{ $labels.%(i)s }} leads {{ $value }} partitions whose followers are not all in sync: one more broker loss can lose acknowledged changes.',
          },
          {
            alert: 'KafkaOfflinePartitions',
            component: 'kafka',
            expr: 'sum by (%(c)s) (last_over_time(kafka_controller_kafkacontroller_offlinepartitionscount[2m])) > 0',
            summary: 'Kafka partitions are offline',
            description: '{{ $value }} Kafka partitions have no leader: producers (TX engines) and the ingestion consumers of those partitions are stopped.',
          },
          // Exactly one broker is the active controller. 0: no partition leadership changes can
          // happen; more than 1: a split brain. Counted 0, not unknown, when no broker is scraped
          // (every JMX target down, or none discovered in a cluster with database targets).
          {
            alert: 'KafkaActiveControllerCount',
            component: 'kafka',
            expr: |||
              (
                sum by (%(c)s) (last_over_time(kafka_controller_kafkacontroller_activecontrollercount[2m]))
                  or on (%(c)s)
                (group by (%(c)s) (up{job=~"%(job_kafka)s|%(tierJobs)s"}) * 0)
              ) != 1
            |||,
            summary: 'Kafka does not have exactly one active controller',
            description: 'The Kafka brokers report {{ $value }} active controllers (want 1; 0 also when no broker can be scraped).',
          },
          {
            alert: 'KafkaIsrShrinking',
            component: 'kafka',
            expr: 'sum by (%(cji)s) (increase(kafka_server_replicamanager_isrshrinks_total[10m])) > 0',
            summary: 'Kafka in-sync replica sets keep shrinking',
            description: 'Followers keep dropping out of the in-sync replicas on broker {{ $labels.%(i)s }} ({{ $value | humanize }} shrinks in 10m): a slow or flapping broker or network.',
          },
          // The ingestion engines' consumer group (ingestion-group-N) falls behind the change stream.
          {
            alert: 'KafkaIngestionConsumerLag',
            component: 'kafka',
            expr: 'sum by (%(c_)sconsumergroup, topic) (last_over_time(kafka_consumergroup_lag{consumergroup=~"%(consumerGroups)s"}[2m])) > %(threshold)s',
            summary: 'The ingestion consumer group lags behind Kafka',
            description: 'Consumer group {{ $labels.consumergroup }} is {{ $value | humanize }} messages behind on topic {{ $labels.topic }} (threshold %(threshold_count)s): changes reach OLAP late.',
          },
        ]),
      ],
    },
  },
}
